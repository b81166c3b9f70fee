"""An S3-compatible server for the artifact tests: moto's (PyPI `moto[server]`),
with request authentication on, so that every request after the setup must
carry a valid Signature Version 4 of an IAM user's access key.

usage: s3_server.py PORT BUCKET CREDENTIALS

Creates the user, its access key (full access) and BUCKET, writes the key's
id and secret to the file CREDENTIALS (a line each), prints `ready` and
serves until killed.
"""

import json
import logging
import os
import sys
import time

# moto serves this many requests without authentication, then checks every
# request's signature against its IAM users' keys.
SETUP_REQUESTS = 3
os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = str(SETUP_REQUESTS)

import boto3  # noqa: E402
from moto.server import ThreadedMotoServer  # noqa: E402

port, bucket, credentials = int(sys.argv[1]), sys.argv[2], sys.argv[3]
# One line per request on stderr would drown the test's own output.
logging.getLogger("werkzeug").setLevel(logging.ERROR)
server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
server.start()
endpoint = f"http://127.0.0.1:{port}"
anonymous = {"endpoint_url": endpoint, "region_name": "us-east-1",
             "aws_access_key_id": "setup", "aws_secret_access_key": "setup"}
iam = boto3.client("iam", **anonymous)
iam.create_user(UserName="strata")
iam.put_user_policy(UserName="strata", PolicyName="all", PolicyDocument=json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
key = iam.create_access_key(UserName="strata")["AccessKey"]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                  aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"])
s3.create_bucket(Bucket=bucket)
with open(credentials, "w") as f:
    f.write(f"{key['AccessKeyId']}\n{key['SecretAccessKey']}\n")
print("ready", flush=True)
while True:
    time.sleep(3600)
