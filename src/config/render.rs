//! The effective configuration as TOML, with secrets replaced by `***`, for `check-config`.

use super::fields::Field;
use super::settings::{Settings, Visitor};

use crate::redact::MASK;

/// `url` with any password masked: the daemon's one implementation, [`crate::redact::redact_url`].
pub use crate::redact::redact_url;

impl Settings {
    /// The effective configuration as a TOML document, secrets masked. Unset optional keys are
    /// listed as comments so that the output shows every key there is.
    pub fn to_redacted_toml(&self) -> String {
        let mut copy = self.clone();
        if copy.source.password.is_some() {
            copy.source.password = Some(MASK.to_string());
        }
        copy.source.url = copy.source.url.as_deref().map(redact_url);
        for t in &mut copy.http.tokens {
            *t = MASK.to_string();
        }
        if copy.http.metrics_token.is_some() {
            copy.http.metrics_token = Some(MASK.to_string());
        }
        if copy.publish.bearer_token.is_some() {
            copy.publish.bearer_token = Some(MASK.to_string());
        }
        copy.publish.whip_url = copy.publish.whip_url.as_deref().map(redact_whip_url);

        let mut w = Writer {
            out: format!(
                "# camgate effective configuration: {}\n",
                self.source_description()
            ),
            section: "",
        };
        copy.visit(&mut w);
        w.out
    }
}

/// A WHIP URL with its path masked: some services (Cloudflare Stream) put the stream's secret
/// key there. Scheme, host and port stay, so the printout still says where it publishes.
pub fn redact_whip_url(u: &str) -> String {
    match url::Url::parse(u) {
        Ok(p) if p.host_str().is_some() => {
            let host = p.host_str().unwrap_or_default();
            match p.port() {
                Some(port) => format!("{}://{host}:{port}/{MASK}", p.scheme()),
                None => format!("{}://{host}/{MASK}", p.scheme()),
            }
        }
        _ => MASK.to_string(),
    }
}

struct Writer {
    out: String,
    section: &'static str,
}

impl Visitor for Writer {
    fn field<T: Field>(&mut self, key: &'static str, value: &mut T) {
        let (section, name) = key.rsplit_once('.').unwrap_or(("", key));
        if section != self.section {
            self.out.push_str(&format!("\n[{section}]\n"));
            self.section = section;
        }
        match value.render() {
            Some(v) => self.out.push_str(&format!("{name} = {v}\n")),
            None => self.out.push_str(&format!("# {name} is not set\n")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_passwords_are_masked_and_the_rest_kept() {
        assert_eq!(
            redact_url("rtsp://admin:hunter2@192.0.2.7:554/stream1"),
            "rtsp://admin:***@192.0.2.7:554/stream1"
        );
        assert_eq!(
            redact_url("rtsp://cam/live?user=a&password=b"),
            "rtsp://cam/live?user=a&password=***"
        );
        assert_eq!(redact_url("rtsp://cam/live"), "rtsp://cam/live");
        assert!(!redact_url("not a url with user:pw@host").contains("pw@"));
    }
}
