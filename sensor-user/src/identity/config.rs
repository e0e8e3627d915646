//! Synapse's `server_name`, read the way Synapse reads its configuration
//! (`synapse/config/_base.py`): `find_config_files` expands each `-c/--config-path` that is
//! a directory into its regular `*.yaml` files in sorted order (subdirectories and other
//! names are skipped), and `read_config_files` loads each with `yaml.safe_load`, skips any
//! that is empty or not a mapping, and shallowly merges them, later files replacing earlier
//! top-level keys. PyYAML also lets a repeated key replace the earlier one in the same
//! file, so the file is not read into a map (which would reject duplicates): only the
//! top-level `server_name` is kept, the last one winning.

use std::fmt;
use std::fs;
use std::path::PathBuf;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_yaml_ng::Value;

use super::IdentityError;

/// The `server_name` of the Synapse whose `-c/--config-path` arguments are `paths`, in the
/// order given. `Ok(None)` when no file sets it (Synapse itself would refuse to start);
/// errors name the file and say what is wrong with it.
pub fn server_name_from_synapse_config(paths: &[PathBuf]) -> Result<Option<String>, IdentityError> {
    let mut found: Option<(PathBuf, Value)> = None;
    for file in config_files(paths)? {
        let io_err = |cause| IdentityError::ConfigIo {
            path: file.clone(),
            cause,
        };
        let text = fs::read_to_string(&file).map_err(io_err)?;
        if let Some(value) =
            top_level_server_name(&text).map_err(|cause| IdentityError::ConfigYaml {
                path: file.clone(),
                cause,
            })?
        {
            found = Some((file, value));
        }
    }
    match found {
        None => Ok(None),
        Some((_, Value::String(name))) => Ok(Some(name)),
        Some((path, _)) => Err(IdentityError::ServerNameNotString { path }),
    }
}

/// The files Synapse would read, in order.
fn config_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, IdentityError> {
    let mut files = Vec::new();
    for path in paths {
        if !path.is_dir() {
            files.push(path.clone());
            continue;
        }
        let io_err = |cause| IdentityError::ConfigIo {
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

/// The document's top-level `server_name` value, if it is a mapping that has one.
fn top_level_server_name(text: &str) -> Result<Option<Value>, serde_yaml_ng::Error> {
    Ok(serde_yaml_ng::from_str::<TopLevel>(text)?.0)
}

struct TopLevel(Option<Value>);

impl<'de> Deserialize<'de> for TopLevel {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TopLevelVisitor)
    }
}

struct TopLevelVisitor;

impl<'de> Visitor<'de> for TopLevelVisitor {
    type Value = TopLevel;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML document")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TopLevel, A::Error> {
        let mut server_name = None;
        while let Some(key) = map.next_key::<Value>()? {
            if key.as_str() == Some("server_name") {
                server_name = Some(map.next_value::<Value>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(TopLevel(server_name))
    }

    // Anything but a mapping is skipped, as Synapse skips it.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TopLevel, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(TopLevel(None))
    }
    fn visit_none<E: de::Error>(self) -> Result<TopLevel, E> {
        Ok(TopLevel(None)) // an empty file: `safe_load` gives None
    }
    fn visit_unit<E: de::Error>(self) -> Result<TopLevel, E> {
        Ok(TopLevel(None))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<TopLevel, E> {
        Ok(TopLevel(None))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<TopLevel, E> {
        Ok(TopLevel(None))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<TopLevel, E> {
        Ok(TopLevel(None))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<TopLevel, E> {
        Ok(TopLevel(None))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<TopLevel, E> {
        Ok(TopLevel(None))
    }
}
