//! The journal as JSON, for auditors and other tools.
//!
//! Each event becomes one flat object: `seq`, `at` (RFC 3339, UTC),
//! `subject` (`{"job": ID}` or `"master_session"`), `event` (its name) and
//! the event's own fields. A job's document is included with personal data
//! masked unless the caller asks for it in clear.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};

use crate::journal::{Event, JobEvent, Millis, Record, Subject};

/// Keys of an `onlinePolicy` document that identify a person. Their values
/// are masked in exports unless revealed.
pub const PERSONAL_KEYS: &[&str] = &[
    "fullName",
    "middleName",
    "surname",
    "fatherName",
    "dateOfBirth",
    "flatDoorNo",
    "floorNo",
    "buildingName",
    "blockName",
    "roadStreetLane",
    "mobileNumber",
    "email",
    "aadhar",
    "pan",
    "panNumber",
];

pub fn rfc3339(at: Millis) -> String {
    DateTime::<Utc>::from_timestamp_millis(at)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Keeps the last two characters of a personal value.
pub fn mask(value: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
    if chars.len() <= 2 {
        return "*".repeat(chars.len());
    }
    let keep: String = chars[chars.len() - 2..].iter().collect();
    format!("{}{keep}", "*".repeat(chars.len() - 2))
}

/// Masks the personal values of a job document (top level and nested).
pub fn mask_document(doc: &mut Value) {
    match doc {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                if PERSONAL_KEYS.contains(&key.as_str()) {
                    if let Value::String(s) = value {
                        *s = mask(s);
                    } else if !value.is_null() {
                        *value = Value::String(mask(&value.to_string()));
                    }
                } else {
                    mask_document(value);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mask_document),
        _ => {}
    }
}

/// One record as a flat JSON object.
pub fn record_to_json(record: &Record, reveal_personal: bool) -> Value {
    let mut out = Map::new();
    out.insert("seq".into(), json!(record.seq));
    out.insert("at".into(), json!(rfc3339(record.at)));
    out.insert(
        "subject".into(),
        match &record.subject {
            Subject::Job(id) => json!({ "job": id.0 }),
            Subject::MasterSession => json!("master_session"),
        },
    );
    out.insert("event".into(), json!(record.event.name()));

    // serde gives `{"variant_name": {fields}}`; the fields are what we want.
    let body = match &record.event {
        Event::Job(e) => serde_json::to_value(e),
        Event::Session(e) => serde_json::to_value(e),
    }
    .unwrap_or(Value::Null);
    if let Value::Object(map) = body {
        for (_, fields) in map {
            if let Value::Object(fields) = fields {
                out.extend(fields);
            }
        }
    }

    if let Event::Job(JobEvent::Accepted { document, .. }) = &record.event {
        let mut doc: Value = serde_json::from_str(document)
            .unwrap_or(Value::String("(document is not valid JSON)".into()));
        if !reveal_personal {
            mask_document(&mut doc);
        }
        out.insert("document".into(), doc);
    }
    if let Some(Value::Number(n)) = out.get("retry_at").cloned() {
        if let Some(ms) = n.as_i64() {
            out.insert("retry_at".into(), json!(rfc3339(ms)));
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_personal_values_and_keeps_the_rest() {
        let mut doc = json!({"aadhar": "200000001234", "vehicleMake": "HONDA",
                             "nested": {"mobileNumber": "9000012345"}});
        mask_document(&mut doc);
        assert_eq!(doc["aadhar"], "**********34");
        assert_eq!(doc["vehicleMake"], "HONDA");
        assert_eq!(doc["nested"]["mobileNumber"], "********45");
    }

    #[test]
    fn events_are_flat_and_named() {
        let record = Record {
            seq: 3,
            at: 0,
            subject: Subject::Job("P1".into()),
            event: Event::Job(JobEvent::Submitted { attempt: 2 }),
        };
        let v = record_to_json(&record, false);
        assert_eq!(v["event"], "submitted");
        assert_eq!(v["attempt"], 2);
        assert_eq!(v["subject"]["job"], "P1");
        assert_eq!(v["at"], "1970-01-01T00:00:00.000Z");
    }
}
