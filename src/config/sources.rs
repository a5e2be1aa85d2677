//! Turning a file and `CAMGATE__*` variables into [`Settings`]: merge the two layers with the
//! `config` crate (later wins, tables merge deeply), then read every known key out of the
//! merged tree, collecting type errors and unknown keys instead of stopping at the first.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use config::{FileFormat, Format, Map, Source, Value, ValueKind};

use super::error::{ConfigError, Problem};
use super::fields::{Field, describe};
use super::settings::{Settings, Visitor};

/// Environment variables that configure camgate start with this, then `SECTION__KEY`.
pub const ENV_PREFIX: &str = "CAMGATE__";

/// Keys whose environment value is a comma-separated list.
const LIST_KEYS: &[&str] = &[
    "webrtc.stun_urls",
    "webrtc.host_addresses",
    "webrtc.nat_1to1_ips",
    "http.tokens",
    "http.cors_origins",
];

/// Keys whose values must not appear in messages.
const SECRET_KEYS: &[&str] = &[
    "source.password",
    "http.tokens",
    "http.metrics_token",
    "publish.bearer_token",
    // Cloudflare Stream's WHIP URL carries the stream's secret key in its path.
    "publish.whip_url",
];

/// One already-collected layer of values, handed to the `config` crate for merging.
#[derive(Clone, Debug)]
struct Layer(Map<String, Value>);

impl Source for Layer {
    fn clone_into_box(&self) -> Box<dyn Source + Send + Sync> {
        Box::new(self.clone())
    }
    fn collect(&self) -> Result<Map<String, Value>, config::ConfigError> {
        Ok(self.0.clone())
    }
}

/// A key made only of lowercase words joined by dots. Anything else is rejected before it
/// reaches the `config` crate's path parser, where `a[999999999]` would allocate that array.
fn plain_key(key: &str) -> bool {
    !key.is_empty()
        && key.split('.').all(|seg| {
            !seg.is_empty()
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        })
}

/// Reads and parses the TOML file; each value remembers the file as its origin.
fn file_layer(path: &Path) -> Result<Map<String, Value>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ConfigError::FileNotFound {
            path: path.to_path_buf(),
        },
        _ => ConfigError::FileUnreadable {
            path: path.to_path_buf(),
            source: e,
        },
    })?;
    let uri = path.display().to_string();
    FileFormat::Toml
        .parse(Some(&uri), &text)
        .map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })
}

/// The `CAMGATE__*` variables as dotted keys. An empty value means "back to the default", which
/// lets the environment undo a file's setting.
fn env_layer(
    env: &[(String, String)],
    problems: &mut Vec<Problem>,
) -> (Map<String, Value>, Vec<String>) {
    let mut map = Map::new();
    let mut used = Vec::new();
    for (name, raw) in env {
        let Some(rest) = strip_prefix_ignore_case(name, ENV_PREFIX) else {
            continue;
        };
        let key = rest.to_ascii_lowercase().replace("__", ".");
        let origin = format!("environment variable {name}");
        if !plain_key(&key) {
            problems.push(Problem::new(
                name.clone(),
                format!("{name}: does not name a setting; expected {ENV_PREFIX}SECTION__KEY, e.g. {ENV_PREFIX}HTTP__LISTEN"),
            ));
            continue;
        }
        let kind = if raw.trim().is_empty() {
            ValueKind::Nil
        } else if LIST_KEYS.contains(&key.as_str()) {
            ValueKind::Array(
                raw.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| Value::new(Some(&origin), s))
                    .collect(),
            )
        } else {
            ValueKind::String(raw.clone())
        };
        map.insert(key, Value::new(Some(&origin), kind));
        used.push(name.clone());
    }
    used.sort();
    (map, used)
}

/// Whether an environment variable is meant for camgate's configuration.
pub(crate) fn has_env_prefix(name: &str) -> bool {
    strip_prefix_ignore_case(name, ENV_PREFIX).is_some()
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Builds settings from defaults, then `file`, then `env`, without semantic validation. Values
/// that could not be read keep their default and are listed in the returned problems.
pub(crate) fn read(
    file: Option<&Path>,
    env: &[(String, String)],
) -> Result<(Settings, Vec<Problem>), ConfigError> {
    let mut problems = Vec::new();
    let mut layers: Vec<Layer> = Vec::new();

    if let Some(path) = file {
        let mut table = file_layer(path)?;
        // Top-level keys go through the path parser when merged; nested ones do not.
        let odd: Vec<String> = table.keys().filter(|k| !plain_key(k)).cloned().collect();
        for key in odd {
            table.remove(&key);
            problems.push(Problem::new(
                key.clone(),
                format!("{key:?}: unknown key (from {})", path.display()),
            ));
        }
        layers.push(Layer(table));
    }
    let (env_map, env_vars) = env_layer(env, &mut problems);
    layers.push(Layer(env_map));

    let merged = layers.collect().map_err(|e| ConfigError::Invalid {
        problems: vec![Problem::new(
            String::new(),
            format!("cannot merge configuration: {e}"),
        )],
    })?;

    let mut settings = Settings::default();
    settings.provenance.file = file.map(Path::to_path_buf);
    settings.provenance.env_vars = env_vars;

    let mut reader = Reader {
        root: &merged,
        problems: &mut problems,
        origins: Default::default(),
    };
    settings.visit(&mut reader);
    settings.provenance.origins = reader.origins;

    unknown_keys(&merged, "", &mut problems);

    Ok((settings, problems))
}

/// Reads each known key out of the merged tree into the settings.
struct Reader<'a> {
    root: &'a Map<String, Value>,
    problems: &'a mut Vec<Problem>,
    origins: std::collections::BTreeMap<String, String>,
}

impl<'a> Reader<'a> {
    /// The value at a dotted key, if every section on the way is a table.
    fn lookup(&self, key: &str) -> Option<&'a Value> {
        let mut table: &'a Map<String, Value> = self.root;
        let mut parts = key.split('.').peekable();
        while let Some(part) = parts.next() {
            let value = table.get(part)?;
            if parts.peek().is_none() {
                return Some(value);
            }
            match &value.kind {
                ValueKind::Table(t) => table = t,
                // Reported once by `unknown_keys`, which walks the sections.
                _ => return None,
            }
        }
        None
    }
}

impl Visitor for Reader<'_> {
    fn field<T: Field>(&mut self, key: &'static str, slot: &mut T) {
        let Some(value) = self.lookup(key).cloned() else {
            return;
        };
        // An empty environment variable: keep the built-in default.
        if matches!(value.kind, ValueKind::Nil) {
            return;
        }
        let origin = value.origin().map(str::to_string);
        match T::read(&value) {
            Ok(v) => {
                *slot = v;
                if let Some(o) = origin {
                    self.origins.insert(key.to_string(), o);
                }
            }
            Err(msg) => {
                // The message quotes the value; never a secret's.
                let msg = if SECRET_KEYS.contains(&key) {
                    "invalid type (value not shown), expected a string".to_string()
                } else {
                    msg
                };
                self.problems.push(Problem::new(
                    key,
                    with_origin(format!("{key}: {msg}"), origin.as_deref()),
                ))
            }
        }
    }
}

pub(crate) fn with_origin(message: String, origin: Option<&str>) -> String {
    match origin {
        Some(o) => format!("{message} (from {o})"),
        None => message,
    }
}

/// Reports every key in the tree that is neither a setting nor a section holding settings.
fn unknown_keys(table: &Map<String, Value>, prefix: &str, problems: &mut Vec<Problem>) {
    let keys = Settings::keys();
    let known: HashSet<&str> = keys.iter().copied().collect();
    let sections: BTreeSet<&str> = keys
        .iter()
        .flat_map(|k| {
            k.char_indices()
                .filter(|&(_, c)| c == '.')
                .map(move |(i, _)| &k[..i])
        })
        .collect();

    let mut names: Vec<&String> = table.keys().collect();
    names.sort();
    for name in names {
        let value = &table[name];
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        if known.contains(path.as_str()) {
            continue;
        }
        if sections.contains(path.as_str()) {
            match &value.kind {
                ValueKind::Table(t) => unknown_keys(t, &path, problems),
                _ => problems.push(Problem::new(
                    path.clone(),
                    with_origin(
                        format!(
                            "{path}: invalid type: found {}, expected a table ([{path}] section)",
                            describe(value)
                        ),
                        value.origin(),
                    ),
                )),
            }
            continue;
        }
        let hint = match suggestion(&path, &keys, &sections) {
            Some(s) => format!("did you mean {s}?"),
            None => {
                let here: Vec<&str> = keys
                    .iter()
                    .filter_map(|k| k.strip_prefix(prefix).and_then(|r| r.strip_prefix('.')))
                    .filter(|r| !r.contains('.'))
                    .collect();
                if prefix.is_empty() || here.is_empty() {
                    format!(
                        "sections are {}",
                        sections
                            .iter()
                            .filter(|s| !s.contains('.'))
                            .copied()
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                } else {
                    format!("keys in [{prefix}] are {}", here.join(", "))
                }
            }
        };
        problems.push(Problem::new(
            path.clone(),
            with_origin(format!("{path}: unknown key; {hint}"), any_origin(value)),
        ));
    }
}

/// Where a value came from; merged tables have no origin of their own, so ask their contents.
fn any_origin(value: &Value) -> Option<&str> {
    value.origin().or_else(|| match &value.kind {
        ValueKind::Table(t) => t.values().find_map(any_origin),
        ValueKind::Array(a) => a.iter().find_map(any_origin),
        _ => None,
    })
}

/// The known key or section closest to a misspelt one, if it is close enough to be a typo.
fn suggestion(path: &str, keys: &[&'static str], sections: &BTreeSet<&str>) -> Option<String> {
    keys.iter()
        .copied()
        .chain(sections.iter().copied())
        .map(|k| (edit_distance(path, k), k))
        .filter(|&(d, _)| d <= 2)
        .min()
        .map(|(_, k)| k.to_string())
}

/// Levenshtein distance over bytes; keys are ASCII.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, &ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1];
        for (j, &cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Which file to read: the explicit one (which must exist), else `default` if it exists.
pub(crate) fn choose_file(
    explicit: Option<&Path>,
    default: &Path,
) -> Result<Option<PathBuf>, ConfigError> {
    match explicit {
        Some(p) => match p.try_exists() {
            Ok(true) => Ok(Some(p.to_path_buf())),
            Ok(false) => Err(ConfigError::FileNotFound {
                path: p.to_path_buf(),
            }),
            Err(e) => Err(ConfigError::FileUnreadable {
                path: p.to_path_buf(),
                source: e,
            }),
        },
        None => match default.try_exists() {
            Ok(true) => Ok(Some(default.to_path_buf())),
            Ok(false) => Ok(None),
            // Present but not even stat-able: say so rather than silently run on defaults.
            Err(e) => Err(ConfigError::FileUnreadable {
                path: default.to_path_buf(),
                source: e,
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_typos() {
        assert_eq!(edit_distance("source.widht", "source.width"), 2);
        assert_eq!(edit_distance("abc", "abc"), 0);
        assert_eq!(edit_distance("", "ab"), 2);
    }

    #[test]
    fn only_plain_keys_reach_the_path_parser() {
        assert!(plain_key("kvs.iot.cert"));
        assert!(!plain_key("a[999999999]"));
        assert!(!plain_key("source..width"));
        assert!(!plain_key(""));
    }
}
