//! Reading loosely typed JSON values the way real ModelsLab clients send them: numbers as
//! strings (`"512"`), booleans as `"yes"`/`"no"`/`1`/`0`, and `null` or `""` meaning "absent".
//! Every helper here is total: any JSON value yields `Ok`, `Err(WrongType)` (wrong type) or `None`.

use serde_json::Value;

/// The value is present but not of the wanted type (e.g. `"abc"` for a number).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WrongType;

impl std::fmt::Display for WrongType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the value has the wrong type")
    }
}

impl std::error::Error for WrongType {}

/// `None` for a missing field, JSON `null` or a blank string: clients use all three for "not set".
pub fn present(value: Option<&Value>) -> Option<&Value> {
    match value {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(v) => Some(v),
    }
}

/// A boolean from `true`/`false`, `1`/`0`, or the strings `true/false/yes/no/1/0/on/off`.
pub fn as_bool(value: &Value) -> Result<bool, WrongType> {
    match value {
        Value::Bool(b) => Ok(*b),
        Value::Number(n) => match n.as_f64() {
            Some(1.0) => Ok(true),
            Some(0.0) => Ok(false),
            _ => Err(WrongType),
        },
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" | "on" | "y" => Ok(true),
            "false" | "no" | "0" | "off" | "n" => Ok(false),
            _ => Err(WrongType),
        },
        _ => Err(WrongType),
    }
}

/// A finite number from a JSON number or a numeric string (`"7.5"`).
pub fn as_f64(value: &Value) -> Result<f64, WrongType> {
    let x = match value {
        Value::Number(n) => n.as_f64().ok_or(WrongType)?,
        Value::String(s) => s.trim().parse::<f64>().map_err(|_| WrongType)?,
        _ => return Err(WrongType),
    };
    if x.is_finite() {
        Ok(x)
    } else {
        Err(WrongType)
    }
}

/// An integer from a JSON integer, an integral float (`512.0`) or an integer string (`"512"`).
/// Values outside `i64` saturate, so callers clamp them like any other out-of-range value.
pub fn as_integer(value: &Value) -> Result<i64, WrongType> {
    if let Value::Number(n) = value {
        if let Some(i) = n.as_i64() {
            return Ok(i);
        }
        if n.as_u64().is_some() {
            return Ok(i64::MAX);
        }
    }
    if let Value::String(s) = value {
        let s = s.trim();
        if let Ok(i) = s.parse::<i64>() {
            return Ok(i);
        }
        if s.parse::<u64>().is_ok() {
            return Ok(i64::MAX);
        }
    }
    let x = as_f64(value)?;
    if x.fract() != 0.0 {
        return Err(WrongType);
    }
    // `as` saturates at the i64 bounds, which is what out-of-range values should do here.
    Ok(x as i64)
}

/// An unsigned 64-bit integer exactly (seeds need the full range, not a saturating value).
pub fn as_u64(value: &Value) -> Result<u64, WrongType> {
    match value {
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                return Ok(u);
            }
            match n.as_f64() {
                Some(x) if x >= 0.0 && x.fract() == 0.0 && x < u64::MAX as f64 => Ok(x as u64),
                _ => Err(WrongType),
            }
        }
        Value::String(s) => s.trim().parse::<u64>().map_err(|_| WrongType),
        _ => Err(WrongType),
    }
}

/// Text from a JSON string, or a number written as text (some clients send numeric prompts/keys).
pub fn as_text(value: &Value) -> Result<String, WrongType> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(WrongType),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn absent_values() {
        assert!(present(None).is_none());
        assert!(present(Some(&Value::Null)).is_none());
        assert!(present(Some(&json!(""))).is_none());
        assert!(present(Some(&json!("  "))).is_none());
        assert_eq!(present(Some(&json!(0))), Some(&json!(0)));
        assert_eq!(present(Some(&json!(false))), Some(&json!(false)));
    }

    #[test]
    fn booleans_in_every_spelling() {
        for t in [
            json!(true),
            json!("true"),
            json!("TRUE"),
            json!("yes"),
            json!(1),
            json!("1"),
        ] {
            assert_eq!(as_bool(&t), Ok(true), "{t}");
        }
        for f in [
            json!(false),
            json!("false"),
            json!("No"),
            json!("no"),
            json!(0),
            json!("0"),
        ] {
            assert_eq!(as_bool(&f), Ok(false), "{f}");
        }
        for bad in [json!("maybe"), json!(2), json!([]), json!({})] {
            assert_eq!(as_bool(&bad), Err(WrongType), "{bad}");
        }
    }

    #[test]
    fn numbers_as_strings() {
        assert_eq!(as_integer(&json!("512")), Ok(512));
        assert_eq!(as_integer(&json!(" 768 ")), Ok(768));
        assert_eq!(as_integer(&json!(512.0)), Ok(512));
        assert_eq!(as_integer(&json!("512.0")), Ok(512));
        assert_eq!(as_integer(&json!(-3)), Ok(-3));
        assert_eq!(as_integer(&json!(u64::MAX)), Ok(i64::MAX));
        assert_eq!(as_integer(&json!("99999999999999999999")), Ok(i64::MAX));
        assert_eq!(as_integer(&json!(5.5)), Err(WrongType));
        assert_eq!(as_integer(&json!("abc")), Err(WrongType));
        assert_eq!(as_f64(&json!("7.5")), Ok(7.5));
        assert_eq!(as_f64(&json!(7)), Ok(7.0));
        assert_eq!(as_f64(&json!("NaN")), Err(WrongType));
        assert_eq!(as_f64(&json!("inf")), Err(WrongType));
        assert_eq!(as_u64(&json!(4029484891u64)), Ok(4029484891));
        assert_eq!(as_u64(&json!("4029484891")), Ok(4029484891));
        assert_eq!(as_u64(&json!(-1)), Err(WrongType));
    }

    #[test]
    fn text_accepts_numbers() {
        assert_eq!(as_text(&json!("hi")), Ok("hi".to_string()));
        assert_eq!(as_text(&json!(42)), Ok("42".to_string()));
        assert_eq!(as_text(&json!(["x"])), Err(WrongType));
    }
}
