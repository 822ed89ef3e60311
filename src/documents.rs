//! Job documents as a file or a request body holds them: one JSON
//! object, an array of them, or one object per line (NDJSON).

use anyhow::bail;
use serde_json::Value;

/// Splits a text into job documents: one object, an array of them, or one
/// object per line (NDJSON). A bad document is named by line and column.
pub fn parse(text: &str) -> anyhow::Result<Vec<Value>> {
    let whole = match serde_json::from_str::<Value>(text) {
        Ok(Value::Array(items)) => return Ok(items),
        Ok(object @ Value::Object(_)) => return Ok(vec![object]),
        Ok(_) => bail!("expected a job object, an array of them, or NDJSON"),
        Err(e) => e,
    };
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(doc) => out.push(doc),
            // Not even the first line is JSON on its own: the file is one
            // document, and its own error says where it breaks.
            Err(_) if out.is_empty() => bail!(
                "malformed JSON at line {}, column {}: {whole}",
                whole.line(),
                whole.column()
            ),
            Err(e) => bail!("line {} is not a JSON object: {e}", i + 1),
        }
    }
    if out.is_empty() {
        bail!("no jobs found");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn a_broken_multi_line_document_names_where_it_breaks() {
        let err = parse("{\"policyId\": \"X\",\n  \"fullName\": oops}").unwrap_err();
        assert!(err.to_string().contains("line 2, column"), "{err}");
    }

    #[test]
    fn ndjson_names_its_bad_line() {
        let err = parse("{\"a\":1}\n{\"b\":\n").unwrap_err();
        assert!(err.to_string().starts_with("line 2 "), "{err}");
        assert_eq!(parse("{\"a\":1}\n{\"b\":2}\n").unwrap().len(), 2);
    }

    #[test]
    fn reads_one_an_array_or_ndjson() {
        assert_eq!(parse("{\"a\":1}").unwrap().len(), 1);
        assert_eq!(parse("[{\"a\":1},{\"a\":2}]").unwrap().len(), 2);
        assert_eq!(
            parse("{\"a\":1}\n\n{\"a\":2}\n{\"a\":3}\n").unwrap().len(),
            3
        );
        let err = parse("{\"a\":1}\nnope\n").unwrap_err();
        assert!(format!("{err:#}").contains("line 2"), "{err:#}");
    }
}
