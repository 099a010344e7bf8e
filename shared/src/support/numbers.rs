//! JSON integers as JSON Schema defines them: `612.0` is the integer 612, and clients generated from
//! the OpenAPI document may send it so. A fraction, or a number outside `i64`, is refused.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserializer;
use serde::de::{self, MapAccess, Visitor};

struct Integer;

impl Visitor<'_> for Integer {
    type Value = i64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an integer")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
        Ok(v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
        i64::try_from(v).map_err(|_| E::custom("integer out of range"))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<i64, E> {
        // Exactly representable integers only (|v| < 2^53 keeps the conversion exact).
        if v.fract() == 0.0 && v.abs() < 9_007_199_254_740_992.0 {
            Ok(v as i64)
        } else {
            Err(E::invalid_type(de::Unexpected::Float(v), &self))
        }
    }
}

/// `#[serde(deserialize_with = "integer")]` for an `i64` field.
pub fn integer<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    d.deserialize_any(Integer)
}

/// `#[serde(deserialize_with = "integer_values")]` for a map of names to `i64`.
pub fn integer_values<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, i64>, D::Error> {
    struct Values;
    impl<'de> Visitor<'de> for Values {
        type Value = BTreeMap<String, i64>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an object of integers")
        }

        fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
            let mut values = BTreeMap::new();
            while let Some(key) = map.next_key::<String>()? {
                let value = map.next_value_seed(IntegerSeed)?;
                values.insert(key, value);
            }
            Ok(values)
        }
    }
    d.deserialize_map(Values)
}

struct IntegerSeed;

impl<'de> de::DeserializeSeed<'de> for IntegerSeed {
    type Value = i64;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<i64, D::Error> {
        integer(d)
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Task {
        #[serde(deserialize_with = "super::integer")]
        xp: i64,
        #[serde(default, deserialize_with = "super::integer_values")]
        min_xp: std::collections::BTreeMap<String, i64>,
    }

    fn xp(json: &str) -> Result<i64, String> {
        serde_json::from_str::<Task>(json).map(|t| t.xp).map_err(|e| e.to_string())
    }

    #[test]
    fn integral_numbers_are_integers_and_fractions_are_refused() {
        assert_eq!(xp(r#"{"xp": 612}"#), Ok(612));
        assert_eq!(xp(r#"{"xp": 612.0}"#), Ok(612));
        assert_eq!(xp(r#"{"xp": -3.0e2}"#), Ok(-300));
        assert!(xp(r#"{"xp": 612.5}"#).is_err());
        assert!(xp(r#"{"xp": 1e300}"#).is_err());
        assert!(xp(r#"{"xp": 18446744073709551615}"#).is_err());
        assert!(xp(r#"{"xp": "612"}"#).is_err());
        let t: Task = serde_json::from_str(r#"{"xp": 1, "min_xp": {"stem": 50.0, "arts": 7}}"#).unwrap();
        assert_eq!(t.min_xp.into_iter().collect::<Vec<_>>(), [("arts".into(), 7), ("stem".into(), 50)]);
        assert!(serde_json::from_str::<Task>(r#"{"xp": 1, "min_xp": {"stem": 0.5}}"#).is_err());
    }
}
