//! `attribution.request_heads`: whether the sensor must read request heads, may run without
//! them, or never reads them.

use std::fmt;

use serde::{Deserialize, Deserializer};

/// What the operator asks of request heads (the request line and headers of each HTTP
/// request, which give the endpoint, the client address, the token and the user).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RequestHeads {
    /// The default: heads are the product. When the kernel refuses the program that reads
    /// them (and the kernel has what it needs, `bpf_loop`), or a watched homeserver sits
    /// where heads cannot be read (a cgroup shared with other processes), the agent exits
    /// with status 1 and says why, rather than run blind.
    #[default]
    Required,
    /// Run without heads where they cannot be had (byte counts only), with a
    /// `sensor_health` alert and the capability gauge at 0 saying so.
    Optional,
    /// Never read heads: per-connection byte counts only, nothing of the HTTP traffic leaves
    /// the kernel.
    Off,
}

impl RequestHeads {
    /// The configuration value, as written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestHeads::Required => "required",
            RequestHeads::Optional => "optional",
            RequestHeads::Off => "off",
        }
    }

    /// Whether heads are read at all.
    pub fn wanted(self) -> bool {
        self != RequestHeads::Off
    }
}

impl fmt::Display for RequestHeads {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for RequestHeads {
    /// `"required"`, `"optional"` or `"off"`; also the booleans of earlier versions
    /// (`true` is `"required"`, `false` is `"off"`).
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Name(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Bool(true) => Ok(RequestHeads::Required),
            Raw::Bool(false) => Ok(RequestHeads::Off),
            Raw::Name(name) => match name.as_str() {
                "required" => Ok(RequestHeads::Required),
                "optional" => Ok(RequestHeads::Optional),
                "off" => Ok(RequestHeads::Off),
                other => Err(serde::de::Error::custom(format!(
                    "request_heads must be \"required\", \"optional\" or \"off\", not \"{other}\""
                ))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RequestHeads;

    #[derive(serde::Deserialize)]
    struct Doc {
        request_heads: RequestHeads,
    }

    fn parse(value: &str) -> Result<RequestHeads, String> {
        toml::from_str::<Doc>(&format!("request_heads = {value}"))
            .map(|d| d.request_heads)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn names_and_the_old_booleans() {
        assert_eq!(parse("\"required\""), Ok(RequestHeads::Required));
        assert_eq!(parse("\"optional\""), Ok(RequestHeads::Optional));
        assert_eq!(parse("\"off\""), Ok(RequestHeads::Off));
        assert_eq!(parse("true"), Ok(RequestHeads::Required));
        assert_eq!(parse("false"), Ok(RequestHeads::Off));
        let err = parse("\"maybe\"").unwrap_err();
        assert!(
            err.contains("\"required\", \"optional\" or \"off\", not \"maybe\""),
            "{err}"
        );
        assert!(parse("1").is_err());
    }
}
