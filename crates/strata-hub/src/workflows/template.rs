//! Templates in workflow steps: in any string of a step's JSON, `{path}`
//! is replaced by the value at that dotted path of the run's context
//! (`alert.device`, `steps.work_order.id`, `run.id` ...). A string that is
//! exactly one `{path}` becomes that value itself, so numbers stay numbers.

use serde_json::Value;

/// Renders `template` against `context`; names the first unknown path.
pub fn render(template: &Value, context: &Value) -> Result<Value, String> {
    Ok(match template {
        Value::String(s) => render_str(s, context)?,
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| render(v, context))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), render(v, context)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

fn lookup<'c>(context: &'c Value, path: &str) -> Result<&'c Value, String> {
    path.split('.')
        .try_fold(context, |v, key| match v {
            Value::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => v.get(key),
        })
        .ok_or_else(|| format!("the template names {{{path}}}, which this run does not have"))
}

fn render_str(s: &str, context: &Value) -> Result<Value, String> {
    if let Some(path) = s.strip_prefix('{').and_then(|r| r.strip_suffix('}'))
        && is_path(path)
    {
        return lookup(context, path).cloned();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) if is_path(&after[..close]) => {
                match lookup(context, &after[..close])? {
                    Value::String(text) => out.push_str(text),
                    other => out.push_str(&other.to_string()),
                }
                rest = &after[close + 1..];
            }
            _ => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    Ok(Value::String(out))
}

/// Whether `s` looks like a path (`a.b_c.0`), not prose in braces.
fn is_path(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|k| {
            !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fills_strings_keeps_types_and_names_unknown_paths() {
        let context = json!({
            "alert": {"device": "press-2", "last_value": 91.5},
            "steps": {"work_order": {"id": "WO-7", "lines": [{"n": 1}]}},
        });
        let template = json!({
            "title": "Overheat on {alert.device} ({alert.last_value} C)",
            "value": "{alert.last_value}",
            "ref": ["{steps.work_order.id}", "{steps.work_order.lines.0.n}", 3],
            "literal": "a {not a path} stays",
        });
        assert_eq!(
            render(&template, &context).unwrap(),
            json!({
                "title": "Overheat on press-2 (91.5 C)",
                "value": 91.5,
                "ref": ["WO-7", 1, 3],
                "literal": "a {not a path} stays",
            })
        );
        let err = render(&json!("{steps.ticket.id}"), &context).unwrap_err();
        assert!(err.contains("steps.ticket.id"), "{err}");
    }
}
