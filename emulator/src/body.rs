//! Request bodies read the way ASP.NET's web JSON defaults read them: property names match
//! case-insensitively and numbers may also come as strings. Values stay raw JSON text so
//! amounts are never routed through `f64`.

use serde_json::value::RawValue;

/// Why a request body was refused (every variant answers 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// Not a JSON object.
    #[error("body is not a JSON object")]
    NotAnObject,
    /// A required property is absent (or `null`).
    #[error("missing property {0}")]
    Missing(&'static str),
    /// A property has the wrong type or an unusable value.
    #[error("invalid property {0}")]
    Invalid(&'static str),
}

/// A JSON object whose properties are looked up case-insensitively.
pub struct JsonObject<'a> {
    properties: Vec<(String, &'a RawValue)>,
}

impl<'a> JsonObject<'a> {
    /// Parses `bytes` as one JSON object.
    pub fn parse(bytes: &'a [u8]) -> Result<JsonObject<'a>, BodyError> {
        let RawObject(properties) =
            serde_json::from_slice(bytes).map_err(|_| BodyError::NotAnObject)?;
        Ok(JsonObject { properties })
    }

    /// The raw JSON text of property `name` (matched case-insensitively; the last one wins,
    /// as System.Text.Json does), or `None` when it is absent or `null`.
    pub fn raw(&self, name: &str) -> Option<&'a str> {
        self.properties
            .iter()
            .rev()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.get())
            .filter(|text| *text != "null")
    }

    /// Property `name` as a string, required.
    pub fn string(&self, name: &'static str) -> Result<String, BodyError> {
        let raw = self.raw(name).ok_or(BodyError::Missing(name))?;
        serde_json::from_str::<String>(raw).map_err(|_| BodyError::Invalid(name))
    }

    /// Property `name` as the exact text of a number (a JSON number, or a string holding
    /// one, as `JsonNumberHandling.AllowReadingFromString` allows), required.
    pub fn number_text(&self, name: &'static str) -> Result<String, BodyError> {
        let raw = self.raw(name).ok_or(BodyError::Missing(name))?;
        if raw.starts_with('"') {
            serde_json::from_str::<String>(raw).map_err(|_| BodyError::Invalid(name))
        } else if raw.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
            Ok(raw.to_owned())
        } else {
            Err(BodyError::Invalid(name))
        }
    }

    /// Property `name` as a boolean, required.
    pub fn boolean(&self, name: &'static str) -> Result<bool, BodyError> {
        let raw = self.raw(name).ok_or(BodyError::Missing(name))?;
        serde_json::from_str::<bool>(raw).map_err(|_| BodyError::Invalid(name))
    }
}

/// A JSON object kept as its properties in order, values unparsed.
struct RawObject<'a>(Vec<(String, &'a RawValue)>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for RawObject<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visitor<'a> {
            type Value = RawObject<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut map: M,
            ) -> Result<Self::Value, M::Error> {
                let mut properties = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, &'de RawValue>()? {
                    properties.push((key, value));
                }
                Ok(RawObject(properties))
            }
        }
        deserializer.deserialize_map(Visitor(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_names_case_insensitively() {
        let body = br#"{"CorrelationID":"x","AMOUNT":19.90,"requestedat":null}"#;
        let object = JsonObject::parse(body).unwrap();
        assert_eq!(object.string("correlationId"), Ok("x".to_owned()));
        assert_eq!(object.number_text("amount"), Ok("19.90".to_owned()));
        assert_eq!(
            object.string("requestedAt"),
            Err(BodyError::Missing("requestedAt"))
        );
    }

    #[test]
    fn keeps_number_text_exact_and_reads_numbers_from_strings() {
        let object =
            JsonObject::parse(br#"{"amount":"1.99e1","a":19.905000000000000001}"#).unwrap();
        assert_eq!(object.number_text("amount"), Ok("1.99e1".to_owned()));
        assert_eq!(
            object.number_text("a"),
            Ok("19.905000000000000001".to_owned())
        );
    }

    #[test]
    fn refuses_non_objects_and_wrong_types() {
        for body in [&b"[]"[..], b"", b"{", b"19.9", b"{\"a\":}"] {
            assert_eq!(JsonObject::parse(body).err(), Some(BodyError::NotAnObject));
        }
        let object = JsonObject::parse(br#"{"amount":true,"failure":1,"token":5}"#).unwrap();
        assert_eq!(
            object.number_text("amount"),
            Err(BodyError::Invalid("amount"))
        );
        assert_eq!(
            object.boolean("failure"),
            Err(BodyError::Invalid("failure"))
        );
        assert_eq!(object.string("token"), Err(BodyError::Invalid("token")));
    }
}
