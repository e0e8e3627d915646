//! Synapse's own configuration, read the way Synapse reads it (`synapse/config/_base.py`):
//! `find_config_files` expands each `-c/--config-path` that is a directory into its regular
//! `*.yaml` files in sorted order (subdirectories and other names are skipped), and
//! `read_config_files` loads each with `yaml.safe_load`, skips any that is empty or not a
//! mapping, and shallowly merges them, later files replacing earlier top-level keys. PyYAML
//! also lets a repeated key replace the earlier one in the same mapping, so a file is never
//! read into a map that would reject duplicates: only the one top-level key asked for is
//! kept, the last one winning, as a [`Node`] that keeps repeated keys too.
//!
//! Two keys are read:
//! - [`server_name`], to complete the user IDs read from access tokens;
//! - [`listeners`], to know where Synapse serves HTTP in a way the sensor cannot see: on a
//!   UNIX socket (the sensor's programs see TCP only) or with Synapse's own TLS (the
//!   request heads are encrypted).
//!
//! The files hold secrets (`macaroon_secret_key`, `registration_shared_secret`, database
//! passwords): errors name the file and what is wrong, never its content.

use std::fmt;
use std::fs;
use std::path::PathBuf;

use serde::de::{
    self, Deserialize, DeserializeSeed, Deserializer, EnumAccess, IgnoredAny, MapAccess, SeqAccess,
    VariantAccess, Visitor,
};

/// Errors reading Synapse's configuration. Each message names the file; none quotes it.
///
/// The cause is a plain field, not `source()`, and is part of the message: a printer that
/// walks the chain does not repeat it.
#[derive(Debug, thiserror::Error)]
pub enum SynapseConfigError {
    #[error("cannot read Synapse config {}: {cause}", path.display())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("Synapse config {} is not valid YAML: {cause}", path.display())]
    Yaml {
        path: PathBuf,
        cause: serde_yaml_ng::Error,
    },
    #[error("Synapse config {}: server_name must be a string", path.display())]
    ServerNameNotString { path: PathBuf },
}

/// The `server_name` of the Synapse whose `-c/--config-path` arguments are `paths`, in the
/// order given. `Ok(None)` when no file sets it (Synapse itself would refuse to start);
/// errors name the file and say what is wrong with it.
pub fn server_name(paths: &[PathBuf]) -> Result<Option<String>, SynapseConfigError> {
    match last_top_level(paths, "server_name")? {
        None => Ok(None),
        Some((_, Node::Str(name))) => Ok(Some(name)),
        Some((path, _)) => Err(SynapseConfigError::ServerNameNotString { path }),
    }
}

/// Where a listener listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bind {
    /// `port:` (on each of its `bind_addresses`, which are not read).
    Tcp { port: u16 },
    /// `path:`, a UNIX socket (Synapse 1.81+). Synapse never serves TLS there.
    Unix { path: PathBuf },
}

/// One entry of Synapse's `listeners`, as far as the sensor cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    pub bind: Bind,
    /// `tls` (default false), read as Python's truth value of what PyYAML loads (YAML 1.1:
    /// `tls: yes` and `tls: on` are true).
    pub tls: bool,
    /// `type`: `http`, `metrics`, `manhole` (`replication` in Synapse before 1.84); empty
    /// when missing (Synapse would refuse to start).
    pub kind: String,
    /// The `names` of its `resources` (`client`, `federation`, `media`, `keys`, ...), in
    /// order, each once.
    pub resources: Vec<String>,
}

impl Listener {
    /// Whether one of its resources is `name`.
    pub fn serves(&self, name: &str) -> bool {
        self.resources.iter().any(|r| r == name)
    }

    /// An entry of `listeners`, the way Synapse's `parse_listener_def` reads it (a
    /// non-empty `path` makes it a UNIX socket, else an integer `port` a TCP one); `None`
    /// for an entry that is not a mapping or has neither (Synapse would refuse to start).
    fn from_node(entry: &Node) -> Option<Listener> {
        if !matches!(entry, Node::Map(_)) {
            return None;
        }
        let path = entry
            .get("path")
            .and_then(Node::as_str)
            .filter(|p| !p.is_empty());
        let bind = match path {
            Some(path) => Bind::Unix { path: path.into() },
            None => match entry.get("port")? {
                Node::Int(port) => Bind::Tcp {
                    port: u16::try_from(*port).ok()?,
                },
                _ => return None,
            },
        };
        let mut resources: Vec<String> = Vec::new();
        if let Some(Node::Seq(list)) = entry.get("resources") {
            let names = list.iter().filter_map(|r| match r.get("names") {
                Some(Node::Seq(names)) => Some(names),
                _ => None,
            });
            for name in names.flatten().filter_map(Node::as_str) {
                if !resources.iter().any(|r| r == name) {
                    resources.push(name.to_owned());
                }
            }
        }
        Some(Listener {
            bind,
            tls: entry.get("tls").is_some_and(Node::truthy),
            kind: entry
                .get("type")
                .and_then(Node::as_str)
                .unwrap_or_default()
                .to_owned(),
            resources,
        })
    }
}

/// The top-level `listeners` of the Synapse whose `-c/--config-path` arguments are `paths`:
/// the last file that sets it wins whole, as Synapse merges top-level keys. Entries that are
/// not mappings or have neither `port` nor `path` are skipped; empty when no file sets it or
/// it is not a list.
pub fn listeners(paths: &[PathBuf]) -> Result<Vec<Listener>, SynapseConfigError> {
    let Some((_, Node::Seq(entries))) = last_top_level(paths, "listeners")? else {
        return Ok(Vec::new());
    };
    Ok(entries.iter().filter_map(Listener::from_node).collect())
}

/// The value of the top-level `key` that Synapse would end up with, and the file it came
/// from: the last file that sets it, the last occurrence in that file.
fn last_top_level(
    paths: &[PathBuf],
    key: &str,
) -> Result<Option<(PathBuf, Node)>, SynapseConfigError> {
    let mut found = None;
    for file in config_files(paths)? {
        let text = fs::read_to_string(&file).map_err(|cause| SynapseConfigError::Io {
            path: file.clone(),
            cause,
        })?;
        let seed = TopLevel { key };
        let value = seed
            .deserialize(serde_yaml_ng::Deserializer::from_str(&text))
            .map_err(|cause| SynapseConfigError::Yaml {
                path: file.clone(),
                cause,
            })?;
        if let Some(value) = value {
            found = Some((file, value));
        }
    }
    Ok(found)
}

/// The files Synapse would read, in order.
fn config_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, SynapseConfigError> {
    let mut files = Vec::new();
    for path in paths {
        if !path.is_dir() {
            files.push(path.clone());
            continue;
        }
        let io_err = |cause| SynapseConfigError::Io {
            path: path.clone(),
            cause,
        };
        let mut in_dir = Vec::new();
        for entry in fs::read_dir(path).map_err(io_err)? {
            let entry_path = entry.map_err(io_err)?.path();
            let yaml = entry_path.extension().is_some_and(|e| e == "yaml");
            if yaml && entry_path.is_file() {
                in_dir.push(entry_path);
            }
        }
        in_dir.sort();
        files.extend(in_dir);
    }
    Ok(files)
}

/// A YAML value as PyYAML's `safe_load` gives it to Synapse, where a repeated key in a
/// mapping replaces the earlier one (serde_yaml_ng's `Value` refuses the document).
enum Node {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Entries in document order; see [`Node::get`].
    Map(Vec<(Node, Node)>),
    /// A value with an application tag (`!thing ...`), which `safe_load` refuses.
    Tagged,
}

impl Node {
    fn as_str(&self) -> Option<&str> {
        match self {
            Node::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value of `key` in a mapping: its last occurrence, else the first of the mappings
    /// merged in with `<<` (PyYAML applies merge keys, explicit keys winning) that has it.
    fn get(&self, key: &str) -> Option<&Node> {
        let Node::Map(entries) = self else {
            return None;
        };
        let explicit = entries.iter().rev().find(|(k, _)| k.as_str() == Some(key));
        if let Some((_, value)) = explicit {
            return Some(value);
        }
        // A later `<<` overrides an earlier one; in `<<: [*a, *b]`, `a` overrides `b`.
        let merged = entries
            .iter()
            .rev()
            .filter(|(k, _)| k.as_str() == Some("<<"));
        merged.map(|(_, m)| m).find_map(|m| match m {
            Node::Seq(maps) => maps.iter().find_map(|m| m.get(key)),
            m => m.get(key),
        })
    }

    /// Python's truth value of what PyYAML loads: in YAML 1.1, which PyYAML follows,
    /// `yes`/`no`/`on`/`off` are booleans; serde_yaml_ng (YAML 1.2) reads them as strings.
    fn truthy(&self) -> bool {
        match self {
            Node::Null => false,
            Node::Bool(b) => *b,
            Node::Int(i) => *i != 0,
            Node::Float(f) => *f != 0.0,
            Node::Str(s) => !matches!(
                s.as_str(),
                "" | "no" | "No" | "NO" | "off" | "Off" | "OFF" | "false" | "False" | "FALSE"
            ),
            Node::Seq(items) => !items.is_empty(),
            Node::Map(entries) => !entries.is_empty(),
            Node::Tagged => true,
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Node::Map(entries))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Node, A::Error> {
        let (_tag, contents) = data.variant::<String>()?;
        contents.newtype_variant::<IgnoredAny>()?;
        Ok(Node::Tagged)
    }
    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Int(v.into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Int(v.into()))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Node, E> {
        Ok(Node::Int(v))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Node, E> {
        Ok(i128::try_from(v).map_or(Node::Float(v as f64), Node::Int))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Str(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        Ok(Node::Str(v))
    }
}

/// Reads one YAML document and keeps the value of its top-level `key` (the last one when
/// the key is repeated), skipping everything else; `None` when the document is not a
/// mapping (Synapse skips it) or does not have the key.
struct TopLevel<'k> {
    key: &'k str,
}

impl<'de> DeserializeSeed<'de> for TopLevel<'_> {
    type Value = Option<Node>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<Node>, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TopLevel<'_> {
    type Value = Option<Node>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML document")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<Node>, A::Error> {
        let mut value = None;
        while let Some(key) = map.next_key::<Node>()? {
            if key.as_str() == Some(self.key) {
                value = Some(map.next_value::<Node>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(value)
    }

    // Anything but a mapping is skipped, as Synapse skips it.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Option<Node>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    fn visit_none<E: de::Error>(self) -> Result<Option<Node>, E> {
        Ok(None) // an empty file: `safe_load` gives None
    }
    fn visit_unit<E: de::Error>(self) -> Result<Option<Node>, E> {
        Ok(None)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Option<Node>, E> {
        Ok(None)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Option<Node>, E> {
        Ok(None)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Option<Node>, E> {
        Ok(None)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Option<Node>, E> {
        Ok(None)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Option<Node>, E> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests;
