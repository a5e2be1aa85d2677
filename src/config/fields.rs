//! How one setting is read from a file or environment value and written back as TOML.
//!
//! Every setting type implements [`Field`]. Reading is deliberately strict about types (a string
//! where a number belongs is an error, not a silent default) but accepts the spellings an
//! environment variable can carry, since there every value is a string.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use config::{Value, ValueKind};

/// A setting's value type.
pub(crate) trait Field: Sized {
    /// Converts a value from a file or the environment. The error text follows `key: ` in the
    /// message the user sees, so it says what was found and what is allowed.
    fn read(value: &Value) -> Result<Self, String>;

    /// The value as a TOML literal, or `None` when the setting is unset.
    fn render(&self) -> Option<String>;
}

/// Describes a value the way an error message should show it: type, then the value itself.
pub(crate) fn describe(value: &Value) -> String {
    match &value.kind {
        ValueKind::Nil => "nothing".to_string(),
        ValueKind::Boolean(b) => format!("boolean {b}"),
        ValueKind::I64(n) => format!("integer {n}"),
        ValueKind::I128(n) => format!("integer {n}"),
        ValueKind::U64(n) => format!("integer {n}"),
        ValueKind::U128(n) => format!("integer {n}"),
        ValueKind::Float(f) => format!("floating point {f}"),
        ValueKind::String(s) if s.chars().count() > 80 => {
            let head: String = s.chars().take(80).collect();
            format!("string {head:?}… ({} characters)", s.chars().count())
        }
        ValueKind::String(s) => format!("string {s:?}"),
        ValueKind::Table(_) => "a table".to_string(),
        ValueKind::Array(_) => "an array".to_string(),
    }
}

fn invalid_type(value: &Value, expected: &str) -> String {
    format!(
        "invalid type: found {}, expected {expected}",
        describe(value)
    )
}

/// A TOML basic string. JSON's escapes are a subset of TOML's, so serde_json writes it.
pub(crate) fn toml_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
}

impl Field for String {
    fn read(value: &Value) -> Result<Self, String> {
        match &value.kind {
            ValueKind::String(s) => Ok(s.clone()),
            _ => Err(invalid_type(value, "a string")),
        }
    }
    fn render(&self) -> Option<String> {
        Some(toml_string(self))
    }
}

impl Field for PathBuf {
    fn read(value: &Value) -> Result<Self, String> {
        match &value.kind {
            ValueKind::String(s) => Ok(PathBuf::from(s)),
            _ => Err(invalid_type(value, "a file path (a string)")),
        }
    }
    fn render(&self) -> Option<String> {
        Some(toml_string(&self.to_string_lossy()))
    }
}

impl Field for bool {
    fn read(value: &Value) -> Result<Self, String> {
        match &value.kind {
            ValueKind::Boolean(b) => Ok(*b),
            // Environment values arrive as strings.
            ValueKind::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "on" | "1" => Ok(true),
                "false" | "no" | "off" | "0" => Ok(false),
                _ => Err(invalid_type(value, "a boolean (true or false)")),
            },
            _ => Err(invalid_type(value, "a boolean (true or false)")),
        }
    }
    fn render(&self) -> Option<String> {
        Some(self.to_string())
    }
}

/// Reads any integer kind, or a string holding one, as an i128 so that every target type can
/// range-check it.
fn read_integer(value: &Value) -> Result<i128, String> {
    match &value.kind {
        ValueKind::I64(n) => Ok(i128::from(*n)),
        ValueKind::U64(n) => Ok(i128::from(*n)),
        ValueKind::I128(n) => Ok(*n),
        ValueKind::U128(n) => i128::try_from(*n).map_err(|_| format!("{n} is too large")),
        ValueKind::String(s) => s
            .trim()
            .parse::<i128>()
            .map_err(|_| invalid_type(value, "an integer")),
        _ => Err(invalid_type(value, "an integer")),
    }
}

macro_rules! integer_field {
    ($($t:ty),*) => {$(
        impl Field for $t {
            fn read(value: &Value) -> Result<Self, String> {
                let n = read_integer(value)?;
                <$t>::try_from(n).map_err(|_| {
                    format!(
                        "invalid value {n}, expected an integer from {} to {}",
                        <$t>::MIN,
                        <$t>::MAX
                    )
                })
            }
            fn render(&self) -> Option<String> {
                Some(self.to_string())
            }
        }
    )*};
}
integer_field!(u16, u32, usize);

impl Field for IpAddr {
    fn read(value: &Value) -> Result<Self, String> {
        match &value.kind {
            ValueKind::String(s) => s.trim().parse().map_err(|_| {
                format!("{s:?} is not an IP address (expected e.g. 192.0.2.10 or 2001:db8::1)")
            }),
            _ => Err(invalid_type(value, "an IP address (a string)")),
        }
    }
    fn render(&self) -> Option<String> {
        Some(toml_string(&self.to_string()))
    }
}

impl Field for SocketAddr {
    fn read(value: &Value) -> Result<Self, String> {
        match &value.kind {
            ValueKind::String(s) => s.trim().parse().map_err(|_| {
                format!(
                    "{s:?} is not a socket address (expected IP:port, e.g. 127.0.0.1:8080 or [::]:8080)"
                )
            }),
            _ => Err(invalid_type(value, "a socket address such as \"127.0.0.1:8080\"")),
        }
    }
    fn render(&self) -> Option<String> {
        Some(toml_string(&self.to_string()))
    }
}

impl<T: Field> Field for Option<T> {
    fn read(value: &Value) -> Result<Self, String> {
        T::read(value).map(Some)
    }
    fn render(&self) -> Option<String> {
        self.as_ref().and_then(Field::render)
    }
}

impl<T: Field> Field for Vec<T> {
    fn read(value: &Value) -> Result<Self, String> {
        match &value.kind {
            ValueKind::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| T::read(item).map_err(|e| format!("item {}: {e}", i + 1)))
                .collect(),
            _ => Err(invalid_type(value, "an array such as [\"a\", \"b\"]")),
        }
    }
    fn render(&self) -> Option<String> {
        let items: Vec<String> = self.iter().filter_map(Field::render).collect();
        Some(format!("[{}]", items.join(", ")))
    }
}

/// Declares a setting whose value is one of a fixed set of names, with the `Field` impl that
/// reports the allowed names when a value is not one of them.
macro_rules! config_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident { $( $(#[$vmeta:meta])* $variant:ident = $text:literal ),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name { $( $(#[$vmeta])* $variant ),+ }

        impl $name {
            /// Every accepted name, in documentation order.
            pub const NAMES: &'static [&'static str] = &[$($text),+];

            /// The name used in the configuration file.
            pub fn as_str(self) -> &'static str {
                match self { $( Self::$variant => $text ),+ }
            }

            fn expected() -> String {
                format!("one of {}", Self::NAMES.join(", "))
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                let lower = s.trim().to_ascii_lowercase();
                match lower.as_str() {
                    $( $text => Ok(Self::$variant), )+
                    _ => Err(format!("unknown value {s:?}; expected {}", Self::expected())),
                }
            }
        }

        impl $crate::config::fields::Field for $name {
            fn read(value: &config::Value) -> Result<Self, String> {
                match &value.kind {
                    config::ValueKind::String(s) => s.parse(),
                    _ => Err(format!(
                        "invalid type: found {}, expected {}",
                        $crate::config::fields::describe(value),
                        Self::expected()
                    )),
                }
            }
            fn render(&self) -> Option<String> {
                Some(format!("\"{}\"", self.as_str()))
            }
        }
    };
}
pub(crate) use config_enum;

#[cfg(test)]
mod tests {
    use super::*;

    fn v(kind: impl Into<ValueKind>) -> Value {
        Value::new(None, kind)
    }

    #[test]
    fn integers_accept_numeric_strings_and_reject_words() {
        assert_eq!(u32::read(&v("1280")).unwrap(), 1280);
        assert_eq!(u32::read(&v(1280_i64)).unwrap(), 1280);
        assert_eq!(
            u32::read(&v("abc")).unwrap_err(),
            "invalid type: found string \"abc\", expected an integer"
        );
        assert_eq!(
            u16::read(&v(70000_i64)).unwrap_err(),
            "invalid value 70000, expected an integer from 0 to 65535"
        );
        assert!(
            u32::read(&v(1.5_f64))
                .unwrap_err()
                .contains("floating point 1.5")
        );
    }

    #[test]
    fn long_values_are_shortened_in_messages() {
        let msg = u32::read(&v("x".repeat(10_000))).unwrap_err();
        assert!(
            msg.len() < 200 && msg.contains("(10000 characters)"),
            "{msg}"
        );
    }

    #[test]
    fn booleans_accept_environment_spellings() {
        assert!(bool::read(&v("TRUE")).unwrap());
        assert!(!bool::read(&v("off")).unwrap());
        assert!(
            bool::read(&v("maybe"))
                .unwrap_err()
                .contains("expected a boolean")
        );
    }

    #[test]
    fn strings_are_rendered_as_valid_toml() {
        assert_eq!(toml_string("a\"b\\c\n"), r#""a\"b\\c\n""#);
    }

    #[test]
    fn list_errors_name_the_item() {
        let list = v(vec![v("127.0.0.1"), v("1.2.3")]);
        let err = Vec::<IpAddr>::read(&list).unwrap_err();
        assert!(
            err.starts_with("item 2: \"1.2.3\" is not an IP address"),
            "{err}"
        );
    }
}
