//! AWS IoT credentials provider: X.509 device certificate → temporary AWS credentials.
//!
//! Devices provisioned through AWS IoT carry a certificate, not access keys. The IoT credentials
//! endpoint trades a mutual-TLS request for short-lived credentials of the role the role alias
//! points at. AWS ships this only in its CRT-based SDKs, so it is implemented here: one GET, cached
//! until shortly before expiry.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::{self, ProvideCredentials, error::CredentialsError};
use serde::Deserialize;
use tokio::sync::Mutex;

/// Where the device's identity lives and which role alias to assume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IotOptions {
    /// The account's `iot:CredentialProvider` endpoint host, e.g. `c1abc.credentials.iot.eu-west-1.amazonaws.com`
    /// (a full `https://…` URL is accepted too; tests point it at loopback).
    pub endpoint: String,
    /// PEM certificate (chain) of the thing.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// Optional PEM CA bundle to trust in addition to the system store (e.g. Amazon Root CA 1).
    pub ca: Option<PathBuf>,
    pub role_alias: String,
    pub thing_name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum IotError {
    #[error("cannot read {what} file {path}: {source}")]
    ReadFile {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("bad {what} PEM in {path}: {detail}")]
    BadPem {
        what: &'static str,
        path: PathBuf,
        detail: String,
    },
    #[error("cannot build the IoT HTTPS client: {0}")]
    Client(String),
    #[error(
        "kvs.iot.endpoint: refusing plain http:// for the credentials endpoint ({0}); use https:// (plain http only when kvs.endpoint_url is an http:// URL)"
    )]
    Plaintext(String),
}

/// Refresh this long before the credentials expire.
const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, Clone)]
pub struct IotCredentialsProvider {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: reqwest::Client,
    url: String,
    thing_name: String,
    cache: Mutex<Option<Credentials>>,
}

#[derive(Deserialize)]
struct Envelope {
    credentials: Wire,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire {
    access_key_id: String,
    secret_access_key: String,
    session_token: String,
    expiration: String,
}

impl IotCredentialsProvider {
    /// `insecure_ok` allows an `http://` endpoint (see [`super::KvsOptions::allows_plaintext`]).
    pub fn new(opts: &IotOptions, insecure_ok: bool) -> Result<Self, IotError> {
        if opts.endpoint.len() >= 7
            && opts.endpoint[..7].eq_ignore_ascii_case("http://")
            && !insecure_ok
        {
            return Err(IotError::Plaintext(crate::redact::redact_url(
                &opts.endpoint,
            )));
        }
        let read = |what: &'static str, path: &PathBuf| {
            std::fs::read(path).map_err(|source| IotError::ReadFile {
                what,
                path: path.clone(),
                source,
            })
        };
        let mut pem = read("certificate", &opts.cert)?;
        pem.push(b'\n');
        pem.extend(read("private key", &opts.key)?);
        let identity = reqwest::Identity::from_pem(&pem).map_err(|e| IotError::BadPem {
            what: "certificate/key",
            path: opts.cert.clone(),
            detail: e.to_string(),
        })?;
        let mut builder = reqwest::Client::builder()
            .identity(identity)
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10));
        if let Some(ca) = &opts.ca {
            let certs = reqwest::Certificate::from_pem_bundle(&read("CA", ca)?).map_err(|e| {
                IotError::BadPem {
                    what: "CA",
                    path: ca.clone(),
                    detail: e.to_string(),
                }
            })?;
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        let client = builder
            .build()
            .map_err(|e| IotError::Client(e.to_string()))?;
        let base = if opts.endpoint.contains("://") {
            opts.endpoint.trim_end_matches('/').to_owned()
        } else {
            format!("https://{}", opts.endpoint.trim_end_matches('/'))
        };
        Ok(IotCredentialsProvider {
            inner: Arc::new(Inner {
                client,
                url: format!("{base}/role-aliases/{}/credentials", opts.role_alias),
                thing_name: opts.thing_name.clone(),
                cache: Mutex::new(None),
            }),
        })
    }

    /// Forgets the cached credentials: the next request fetches new ones.
    pub async fn invalidate(&self) {
        *self.inner.cache.lock().await = None;
    }

    async fn credentials(&self) -> provider::Result {
        let mut cache = self.inner.cache.lock().await;
        if let Some(c) = cache.as_ref()
            && still_fresh(c, SystemTime::now())
        {
            return Ok(c.clone());
        }
        let fresh = self.fetch().await?;
        *cache = Some(fresh.clone());
        Ok(fresh)
    }

    async fn fetch(&self) -> provider::Result {
        let resp = self
            .inner
            .client
            .get(&self.inner.url)
            .header("x-amzn-iot-thingname", &self.inner.thing_name)
            .send()
            .await
            .map_err(|e| {
                CredentialsError::provider_error(format!("IoT credentials request failed: {e}"))
            })?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| CredentialsError::provider_error(format!("IoT credentials body: {e}")))?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body);
            let text: String = text.chars().take(200).collect();
            return Err(CredentialsError::provider_error(format!(
                "IoT credentials endpoint answered HTTP {status}: {text}"
            )));
        }
        parse(&body)
    }
}

fn still_fresh(c: &Credentials, now: SystemTime) -> bool {
    c.expiry().is_none_or(|exp| now + REFRESH_MARGIN < exp)
}

fn parse(body: &[u8]) -> provider::Result {
    let env: Envelope = serde_json::from_slice(body).map_err(|e| {
        CredentialsError::unhandled(format!("IoT credentials response is not as expected: {e}"))
    })?;
    let w = env.credentials;
    let expiry = aws_smithy_types::DateTime::from_str(
        &w.expiration,
        aws_smithy_types::date_time::Format::DateTime,
    )
    .ok()
    .and_then(|d| SystemTime::try_from(d).ok())
    .ok_or_else(|| {
        CredentialsError::unhandled(format!("IoT credentials expiration {:?}", w.expiration))
    })?;
    Ok(Credentials::new(
        w.access_key_id,
        w.secret_access_key,
        Some(w.session_token),
        Some(expiry),
        "AwsIotCredentialsProvider",
    ))
}

impl ProvideCredentials for IotCredentialsProvider {
    fn provide_credentials<'a>(&'a self) -> provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        provider::future::ProvideCredentials::new(self.credentials())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_iot_response() {
        let body = br#"{"credentials":{"accessKeyId":"ASIAEXAMPLE","secretAccessKey":"s","sessionToken":"t","expiration":"2026-11-22T18:15:00Z"}}"#;
        let c = parse(body).unwrap();
        assert_eq!(c.access_key_id(), "ASIAEXAMPLE");
        assert_eq!(c.secret_access_key(), "s");
        assert_eq!(c.session_token(), Some("t"));
        assert_eq!(
            c.expiry(),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_371_300))
        );
    }

    #[test]
    fn rejects_malformed_responses() {
        assert!(parse(b"{}").is_err());
        assert!(parse(b"not json").is_err());
        let bad_date = br#"{"credentials":{"accessKeyId":"a","secretAccessKey":"s","sessionToken":"t","expiration":"tomorrow"}}"#;
        assert!(parse(bad_date).is_err());
    }

    #[test]
    fn refreshes_five_minutes_before_expiry() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let c = |secs| Credentials::new("a", "s", None, Some(now + Duration::from_secs(secs)), "t");
        assert!(still_fresh(&c(301), now));
        assert!(!still_fresh(&c(300), now));
        assert!(still_fresh(
            &Credentials::new("a", "s", None, None, "t"),
            now
        ));
    }

    #[test]
    fn missing_files_are_reported_by_name() {
        let err = IotCredentialsProvider::new(
            &IotOptions {
                endpoint: "127.0.0.1:1".into(),
                cert: "/nonexistent/cert.pem".into(),
                key: "/nonexistent/key.pem".into(),
                ca: None,
                role_alias: "alias".into(),
                thing_name: "thing".into(),
            },
            false,
        )
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/cert.pem"), "{err}");
    }

    #[test]
    fn plain_http_is_refused_unless_allowed() {
        let opts = IotOptions {
            endpoint: "http://127.0.0.1:1".into(),
            cert: "/nonexistent/cert.pem".into(),
            key: "/nonexistent/key.pem".into(),
            ca: None,
            role_alias: "alias".into(),
            thing_name: "thing".into(),
        };
        let err = IotCredentialsProvider::new(&opts, false).unwrap_err();
        assert!(matches!(err, IotError::Plaintext(_)), "{err}");
        assert!(err.to_string().contains("kvs.iot.endpoint"), "{err}");
        // Allowed: the check passes and the next problem (the missing files) is reported.
        let err = IotCredentialsProvider::new(&opts, true).unwrap_err();
        assert!(matches!(err, IotError::ReadFile { .. }), "{err}");
    }

    /// A loopback AWS IoT credentials endpoint that insists on a client certificate.
    mod mtls {
        use super::*;
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
        use tokio_rustls::rustls::server::WebPkiClientVerifier;
        use tokio_rustls::rustls::{RootCertStore, ServerConfig};

        struct Pki {
            ca_pem: String,
            server: (String, String),
            client: (String, String),
        }

        fn pki() -> Pki {
            let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
            ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
            let leaf = |san: &str| {
                let key = KeyPair::generate().unwrap();
                let cert = CertificateParams::new(vec![san.to_owned()])
                    .unwrap()
                    .signed_by(&key, &ca)
                    .unwrap();
                (cert.pem(), key.serialize_pem())
            };
            Pki {
                ca_pem: ca.pem(),
                server: leaf("127.0.0.1"),
                client: leaf("thing-1"),
            }
        }

        /// Serves `requests` HTTP requests; returns each request head it saw.
        async fn serve(pki: &Pki, requests: usize) -> (u16, tokio::task::JoinHandle<Vec<String>>) {
            let mut roots = RootCertStore::empty();
            roots
                .add(CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).unwrap())
                .unwrap();
            let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
                .build()
                .unwrap();
            let config = ServerConfig::builder()
                .with_client_cert_verifier(verifier)
                .with_single_cert(
                    vec![CertificateDer::from_pem_slice(pki.server.0.as_bytes()).unwrap()],
                    PrivateKeyDer::from_pem_slice(pki.server.1.as_bytes()).unwrap(),
                )
                .unwrap();
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let task = tokio::spawn(async move {
                let mut seen = Vec::new();
                while seen.len() < requests {
                    let (tcp, _) = listener.accept().await.unwrap();
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        seen.push("handshake refused".to_owned());
                        continue;
                    };
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        let n = tls.read(&mut chunk).await.unwrap();
                        if n == 0 {
                            break;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    seen.push(String::from_utf8_lossy(&buf).into_owned());
                    let body = format!(
                        r#"{{"credentials":{{"accessKeyId":"ASIA{}","secretAccessKey":"s","sessionToken":"t","expiration":"2099-01-01T00:00:00Z"}}}}"#,
                        seen.len()
                    );
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    tls.write_all(resp.as_bytes()).await.unwrap();
                    let _ = tls.shutdown().await;
                }
                seen
            });
            (port, task)
        }

        fn write(dir: &std::path::Path, name: &str, text: &str) -> PathBuf {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p
        }

        #[tokio::test]
        async fn fetches_over_mutual_tls_and_caches() {
            crate::signaling::kvs::install_crypto_provider();
            let pki = pki();
            let dir = std::env::temp_dir().join(format!("camgate-iot-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let (port, server) = serve(&pki, 2).await;
            let provider = IotCredentialsProvider::new(
                &IotOptions {
                    endpoint: format!("https://127.0.0.1:{port}"),
                    cert: write(&dir, "cert.pem", &pki.client.0),
                    key: write(&dir, "key.pem", &pki.client.1),
                    ca: Some(write(&dir, "ca.pem", &pki.ca_pem)),
                    role_alias: "camgate-role".into(),
                    thing_name: "thing-1".into(),
                },
                false,
            )
            .unwrap();
            let c = provider.provide_credentials().await.unwrap();
            assert_eq!(c.access_key_id(), "ASIA1");
            assert_eq!(c.session_token(), Some("t"));
            // Far from expiry: served from the cache, no second request.
            let again = provider.provide_credentials().await.unwrap();
            assert_eq!(again.access_key_id(), "ASIA1");
            // After the service refused them: fetched again despite the far expiry.
            provider.invalidate().await;
            provider.provide_credentials().await.unwrap();
            let seen = server.await.unwrap();
            assert_eq!(seen.len(), 2, "invalidate did not cause a new request");
            let head = seen[0].to_ascii_lowercase();
            assert!(
                head.starts_with("get /role-aliases/camgate-role/credentials "),
                "{head}"
            );
            assert!(head.contains("x-amzn-iot-thingname: thing-1"), "{head}");
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}
