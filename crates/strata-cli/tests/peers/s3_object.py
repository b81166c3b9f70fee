"""Reads or replaces one object of an S3 bucket with boto3 (the AWS SDK for
Python), for the artifact tests to look at the bucket as another client.

usage: s3_object.py get ENDPOINT KEY_ID SECRET BUCKET KEY        (bytes to stdout)
       s3_object.py put ENDPOINT KEY_ID SECRET BUCKET KEY FILE
"""

import sys

import boto3

command, endpoint, key_id, secret, bucket, key = sys.argv[1:7]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                  aws_access_key_id=key_id, aws_secret_access_key=secret)
if command == "get":
    sys.stdout.buffer.write(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
else:
    with open(sys.argv[7], "rb") as f:
        s3.put_object(Bucket=bucket, Key=key, Body=f.read())
