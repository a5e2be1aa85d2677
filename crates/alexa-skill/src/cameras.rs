//! The cameras the skill offers to Alexa, from the `CAMGATE_CAMERAS` environment variable.
//!
//! ```json
//! [{"endpoint_id": "front-door", "friendly_name": "Front Door", "channel_name": "front-door",
//!   "display_category": "DOORBELL", "full_duplex": true}]
//! ```
//!
//! Parsing is strict (unknown keys are refused) so that a typo is reported instead of being
//! ignored; every error names the camera (by position and id) and the key.

use std::collections::HashSet;
use std::fmt;

use serde::Deserialize;

/// The environment variable that holds the JSON array of cameras.
pub const ENV: &str = "CAMGATE_CAMERAS";

/// Alexa's endpoint id: letters, digits, spaces and `_ - = # ; : ? @ &`, at most 256
/// characters (Alexa.Discovery documentation). It is the key every directive names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EndpointId(String);

impl EndpointId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EndpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A KVS signaling channel ARN (`arn:<partition>:kinesisvideo:<region>:<account>:channel/<name>/<n>`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChannelArn(String);

impl ChannelArn {
    /// Checks the shape the service returns; the service itself has the last word.
    pub fn parse(s: &str) -> Result<ChannelArn, String> {
        let parts: Vec<&str> = s.splitn(6, ':').collect();
        let ok = parts.len() == 6
            && parts[0] == "arn"
            && parts[1].starts_with("aws")
            && parts[2] == "kinesisvideo"
            && !parts[3].is_empty()
            && parts[5].starts_with("channel/")
            && s.len() <= 1024;
        if ok {
            Ok(ChannelArn(s.to_owned()))
        } else {
            Err(format!(
                "{s:?} is not a KVS channel ARN (arn:aws:kinesisvideo:<region>:<account>:channel/<name>/<id>)"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The region the ARN names (its fourth field).
    pub fn region(&self) -> &str {
        self.0.split(':').nth(3).unwrap_or_default()
    }
}

impl fmt::Display for ChannelArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a camera's channel is named in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ChannelRef {
    /// Resolved to an ARN with DescribeSignalingChannel (once per warm Lambda).
    Name(String),
    Arn(ChannelArn),
}

impl fmt::Display for ChannelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChannelRef::Name(n) => write!(f, "channel {n}"),
            ChannelRef::Arn(a) => write!(f, "channel {a}"),
        }
    }
}

/// Alexa's display category; the first one picks the icon in the Alexa app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum DisplayCategory {
    #[default]
    #[serde(rename = "CAMERA")]
    Camera,
    #[serde(rename = "DOORBELL")]
    Doorbell,
}

/// One camera as Alexa sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Camera {
    pub endpoint_id: EndpointId,
    /// What the user says: "Alexa, show the <friendly name>".
    pub friendly_name: String,
    /// Shown in the Alexa app under the device; a default names camgate.
    pub description: Option<String>,
    pub channel: ChannelRef,
    /// The channel's region when it is not the Lambda's own (`AWS_REGION`): given, or taken
    /// from `channel_arn`. Alexa runs Smart Home Lambdas only in us-east-1, eu-west-1 and
    /// us-west-2; the camera's channel may live anywhere.
    pub region: Option<String>,
    pub display_category: DisplayCategory,
    /// Tap-to-talk (both directions at once) rather than push-to-talk.
    pub full_duplex: bool,
}

/// The configured cameras, in the order they were given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cameras(Vec<Camera>);

impl Cameras {
    pub fn find(&self, endpoint_id: &str) -> Option<&Camera> {
        self.0
            .iter()
            .find(|c| c.endpoint_id.as_str() == endpoint_id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Camera> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Why `CAMGATE_CAMERAS` cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CamerasError {
    #[error("{ENV} is not set: it must hold a JSON array of cameras")]
    Missing,
    #[error("{ENV} is not valid JSON for a camera list: {0}")]
    Json(String),
    #[error("{ENV} lists no camera")]
    Empty,
    #[error("{ENV}[{index}] ({endpoint_id:?}): {problem}")]
    Invalid {
        index: usize,
        endpoint_id: String,
        problem: String,
    },
    #[error("{ENV}: endpoint_id {0:?} is used by more than one camera")]
    Duplicate(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCamera {
    endpoint_id: String,
    friendly_name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    channel_name: Option<String>,
    #[serde(default)]
    channel_arn: Option<String>,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    display_category: DisplayCategory,
    #[serde(default)]
    full_duplex: bool,
}

/// Reads and validates `CAMGATE_CAMERAS`.
pub fn from_env() -> Result<Cameras, CamerasError> {
    match std::env::var(ENV) {
        Ok(s) => parse(&s),
        Err(std::env::VarError::NotPresent) => Err(CamerasError::Missing),
        Err(std::env::VarError::NotUnicode(_)) => Err(CamerasError::Json("not UTF-8".into())),
    }
}

/// Parses and validates a camera list.
pub fn parse(json: &str) -> Result<Cameras, CamerasError> {
    let raw: Vec<RawCamera> =
        serde_json::from_str(json).map_err(|e| CamerasError::Json(e.to_string()))?;
    if raw.is_empty() {
        return Err(CamerasError::Empty);
    }
    let mut seen = HashSet::new();
    let mut cameras = Vec::with_capacity(raw.len());
    for (index, r) in raw.into_iter().enumerate() {
        let invalid = |problem: String| CamerasError::Invalid {
            index,
            endpoint_id: r.endpoint_id.clone(),
            problem,
        };
        if let Some(p) = endpoint_id_problem(&r.endpoint_id) {
            return Err(invalid(format!("endpoint_id {p}")));
        }
        let name_len = r.friendly_name.chars().count();
        if r.friendly_name.trim().is_empty() || name_len > 128 {
            return Err(invalid(
                "friendly_name must be 1 to 128 characters (it is what the user says)".into(),
            ));
        }
        if r.description
            .as_ref()
            .is_some_and(|d| d.chars().count() > 128)
        {
            return Err(invalid("description is longer than 128 characters".into()));
        }
        let channel = match (r.channel_name.as_deref(), r.channel_arn.as_deref()) {
            (Some(name), None) => {
                if !kvs_name_ok(name) {
                    return Err(invalid(format!(
                        "channel_name {name:?} is not a KVS channel name ([a-zA-Z0-9_.-], 1 to 256 characters)"
                    )));
                }
                ChannelRef::Name(name.to_owned())
            }
            (None, Some(arn)) => ChannelRef::Arn(
                ChannelArn::parse(arn).map_err(|p| invalid(format!("channel_arn {p}")))?,
            ),
            (Some(_), Some(_)) => {
                return Err(invalid("give channel_name or channel_arn, not both".into()));
            }
            (None, None) => {
                return Err(invalid("channel_name or channel_arn is required".into()));
            }
        };
        if let Some(region) = &r.region
            && !region_ok(region)
        {
            return Err(invalid(format!(
                "region {region:?} is not an AWS region name (e.g. eu-central-1)"
            )));
        }
        let region = match (&channel, r.region) {
            (ChannelRef::Arn(arn), Some(region)) if region != arn.region() => {
                return Err(invalid(format!(
                    "region {region:?} differs from the region of channel_arn ({})",
                    arn.region()
                )));
            }
            (ChannelRef::Arn(arn), _) => Some(arn.region().to_owned()),
            (ChannelRef::Name(_), region) => region,
        };
        if !seen.insert(r.endpoint_id.clone()) {
            return Err(CamerasError::Duplicate(r.endpoint_id));
        }
        cameras.push(Camera {
            endpoint_id: EndpointId(r.endpoint_id),
            friendly_name: r.friendly_name,
            description: r.description,
            channel,
            region,
            display_category: r.display_category,
            full_duplex: r.full_duplex,
        });
    }
    Ok(Cameras(cameras))
}

fn endpoint_id_problem(id: &str) -> Option<String> {
    if id.is_empty() || id.chars().count() > 256 {
        return Some("must be 1 to 256 characters".into());
    }
    let bad: String = id
        .chars()
        .filter(|c| !(c.is_ascii_alphanumeric() || " _-=#;:?@&".contains(*c)))
        .collect();
    (!bad.is_empty()).then(|| {
        format!("has characters Alexa refuses ({bad:?}); use letters, digits, spaces and _ - = # ; : ? @ &")
    })
}

/// `us-west-2`, `eu-central-1`, `us-gov-west-1`, `cn-north-1`: lowercase words and a number.
fn region_ok(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() >= 3
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[parts.len() - 1].bytes().all(|b| b.is_ascii_digit())
        && !parts[parts.len() - 1].is_empty()
}

/// KVS channel names and client ids: `[a-zA-Z0-9_.-]{1,256}`.
pub(crate) fn kvs_name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 256
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_list_parses_with_defaults() {
        let c = parse(
            r#"[{"endpoint_id":"front-door","friendly_name":"Front Door","channel_name":"front-door",
                 "display_category":"DOORBELL","full_duplex":true},
                {"endpoint_id":"garage","friendly_name":"Garage",
                 "channel_arn":"arn:aws:kinesisvideo:eu-west-1:123456789012:channel/garage/1700000000000"}]"#,
        )
        .unwrap();
        assert_eq!(c.len(), 2);
        let door = c.find("front-door").unwrap();
        assert_eq!(door.display_category, DisplayCategory::Doorbell);
        assert!(door.full_duplex);
        assert_eq!(door.channel, ChannelRef::Name("front-door".into()));
        let garage = c.find("garage").unwrap();
        assert_eq!(garage.display_category, DisplayCategory::Camera);
        assert!(!garage.full_duplex);
        assert!(matches!(garage.channel, ChannelRef::Arn(_)));
        assert_eq!(garage.region.as_deref(), Some("eu-west-1"));
        assert_eq!(door.region, None);
        let away = parse(r#"[{"endpoint_id":"a","friendly_name":"A","channel_name":"x","region":"eu-central-1"}]"#)
            .unwrap();
        assert_eq!(
            away.find("a").unwrap().region.as_deref(),
            Some("eu-central-1")
        );
        assert!(c.find("attic").is_none());
    }

    fn err(json: &str) -> String {
        parse(json).unwrap_err().to_string()
    }

    #[test]
    fn every_mistake_is_named() {
        assert!(err("").contains("not valid JSON"));
        assert!(err("{}").contains("not valid JSON"));
        assert!(err("[]").contains("lists no camera"));
        let typo = err(r#"[{"endpoint_id":"a","friendly_name":"A","channel":"x"}]"#);
        assert!(typo.contains("unknown field `channel`"), "{typo}");
        let none = err(r#"[{"endpoint_id":"a","friendly_name":"A"}]"#);
        assert!(
            none.contains("[0]") && none.contains("channel_name or channel_arn is required"),
            "{none}"
        );
        let both = err(
            r#"[{"endpoint_id":"a","friendly_name":"A","channel_name":"x","channel_arn":"arn:aws:kinesisvideo:r:1:channel/x/1"}]"#,
        );
        assert!(both.contains("not both"), "{both}");
        let arn = err(r#"[{"endpoint_id":"a","friendly_name":"A","channel_arn":"front-door"}]"#);
        assert!(arn.contains("not a KVS channel ARN"), "{arn}");
        let name = err(r#"[{"endpoint_id":"a","friendly_name":"A","channel_name":"front door"}]"#);
        assert!(name.contains("not a KVS channel name"), "{name}");
        let id = err(r#"[{"endpoint_id":"cam/1","friendly_name":"A","channel_name":"x"}]"#);
        assert!(id.contains("endpoint_id") && id.contains("\"/\""), "{id}");
        let empty = err(r#"[{"endpoint_id":"a","friendly_name":" ","channel_name":"x"}]"#);
        assert!(empty.contains("friendly_name"), "{empty}");
        let cat = err(
            r#"[{"endpoint_id":"a","friendly_name":"A","channel_name":"x","display_category":"LIGHT"}]"#,
        );
        assert!(cat.contains("LIGHT"), "{cat}");
        let region = err(
            r#"[{"endpoint_id":"a","friendly_name":"A","channel_name":"x","region":"Frankfurt"}]"#,
        );
        assert!(region.contains("not an AWS region"), "{region}");
        let clash = err(
            r#"[{"endpoint_id":"a","friendly_name":"A","region":"us-east-1","channel_arn":"arn:aws:kinesisvideo:eu-west-1:1:channel/x/1"}]"#,
        );
        assert!(
            clash.contains("differs from the region of channel_arn"),
            "{clash}"
        );
        let dup = err(
            r#"[{"endpoint_id":"a","friendly_name":"A","channel_name":"x"},
                {"endpoint_id":"a","friendly_name":"B","channel_name":"y"}]"#,
        );
        assert!(dup.contains("more than one camera"), "{dup}");
    }
}
