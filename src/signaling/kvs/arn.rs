//! Signaling channel ARNs: what DescribeSignalingChannel (or `kvs.channel_arn`) names the
//! channel by, and what GetSignalingChannelEndpoint, GetIceServerConfig and the master's
//! connect URL (`X-Amz-ChannelARN`) are called with.
//!
//! A [`ChannelArn`] is made only by [`ChannelArn::parse`], where the ARN enters: the
//! configuration or the API's answer. Past that, its region can be read without checking again.

use std::fmt;

/// The service's limit on an ARN's length.
const MAX_ARN_CHARS: usize = 1024;

/// A signaling channel's ARN:
/// `arn:<partition>:kinesisvideo:<region>:<account>:channel/<name>/<creation ms>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChannelArn(String);

/// Why text is not a signaling channel ARN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadChannelArn {
    #[error("the channel ARN is empty")]
    Empty,
    #[error("the channel ARN is {len} characters, over the service limit of {MAX_ARN_CHARS}")]
    TooLong { len: usize },
    #[error(
        "not a signaling channel ARN; expected arn:aws:kinesisvideo:<region>:<account>:channel/<name>/<number>"
    )]
    Malformed,
}

impl ChannelArn {
    /// Checks text against the ARN pattern of the KVS API (for the `channel` resource type);
    /// the name part follows the channel name rule, 1 to 256 of `[a-zA-Z0-9_.-]`.
    pub fn parse(s: &str) -> Result<ChannelArn, BadChannelArn> {
        if s.is_empty() {
            return Err(BadChannelArn::Empty);
        }
        if s.len() > MAX_ARN_CHARS {
            return Err(BadChannelArn::TooLong { len: s.len() });
        }
        let lower_digit_dash = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        };
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let name_ok = |s: &str| {
            (1..=256).contains(&s.len())
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        };
        let parts: Vec<&str> = s.split(':').collect();
        let [arn_lit, partition, service, region, account, resource] = parts[..] else {
            return Err(BadChannelArn::Malformed);
        };
        let res: Vec<&str> = resource.split('/').collect();
        let [kind, name, created] = res[..] else {
            return Err(BadChannelArn::Malformed);
        };
        let well_formed = arn_lit == "arn"
            && lower_digit_dash(partition)
            && service == "kinesisvideo"
            && lower_digit_dash(region)
            && digits(account)
            && kind == "channel"
            && name_ok(name)
            && digits(created);
        if well_formed {
            Ok(ChannelArn(s.to_owned()))
        } else {
            Err(BadChannelArn::Malformed)
        }
    }

    /// The region field (the fourth), which a valid ARN always has.
    pub fn region(&self) -> &str {
        self.0.split(':').nth(3).unwrap_or_default()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ChannelArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for ChannelArn {
    type Err = BadChannelArn;

    fn from_str(s: &str) -> Result<ChannelArn, BadChannelArn> {
        ChannelArn::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_what_kvs_returns() {
        for (ok, region) in [
            (
                "arn:aws:kinesisvideo:eu-west-1:123456789012:channel/cam/1700000000000",
                "eu-west-1",
            ),
            (
                "arn:aws:kinesisvideo:us-west-2:123456789012:channel/my-cam_1.x/1700000000000",
                "us-west-2",
            ),
            (
                "arn:aws-cn:kinesisvideo:cn-north-1:1:channel/c/1",
                "cn-north-1",
            ),
        ] {
            let arn = ChannelArn::parse(ok).unwrap();
            assert_eq!(arn.as_str(), ok);
            assert_eq!(arn.to_string(), ok);
            assert_eq!(arn.region(), region);
        }
        let long_name = format!(
            "arn:aws:kinesisvideo:eu-west-1:123456789012:channel/{}/1700000000000",
            "n".repeat(256)
        );
        assert!(ChannelArn::parse(&long_name).is_ok());
    }

    #[test]
    fn refuses_empty_over_long_and_malformed() {
        assert_eq!(ChannelArn::parse(""), Err(BadChannelArn::Empty));
        let too_long = format!(
            "arn:aws:kinesisvideo:eu-west-1:123456789012:channel/{}/1700000000000",
            "n".repeat(1000)
        );
        assert_eq!(
            ChannelArn::parse(&too_long),
            Err(BadChannelArn::TooLong {
                len: too_long.len()
            })
        );
        for bad in [
            "cam",
            "arn",
            "arn:aws:kinesisvideo::1:channel/c/1",
            "arn:aws:kinesisvideo:us-west-2:acct:channel/cam/1",
            "arn:aws:kinesisvideo:us-west-2:123456789012:stream/cam/1700000000000",
            "arn:aws:kinesis:us-west-2:123456789012:channel/cam/1700000000000",
            "arn:aws:kinesisvideo:us-west-2:123456789012:channel/cam/17000000000x0",
            "arn:aws:kinesisvideo:us-west-2:123456789012:channel/c am/1700000000000",
            "arn:aws:kinesisvideo:us-west-2:123456789012:channel/cam",
            "arn:aws:kinesisvideo:us-west-2:123456789012:channel//1700000000000",
            "arn:AWS:kinesisvideo:us-west-2:123456789012:channel/cam/1700000000000",
            "arn:aws:kinesisvideo:us-west-2:123456789012:channel/cam/1700000000000:x",
            "arn:aws:kinesisvideo:us-west-2:123456789012:channel/cam/1700000000000/2",
            "arn:aws:kinesisvideo:eu-west-1:123456789012:channel/cam/1700000000000\n",
        ] {
            assert_eq!(
                ChannelArn::parse(bad),
                Err(BadChannelArn::Malformed),
                "{bad:?}"
            );
        }
        let name_too_long = format!(
            "arn:aws:kinesisvideo:eu-west-1:123456789012:channel/{}/1",
            "n".repeat(257)
        );
        assert_eq!(
            ChannelArn::parse(&name_too_long),
            Err(BadChannelArn::Malformed)
        );
    }
}
