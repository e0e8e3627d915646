//! Recognising a Synapse process from its command line.
//!
//! Every thread of a Synapse process shows `comm` = `python3` (or `python`), so the command
//! line is the only reliable sign. Synapse is started either as a module
//! (`python3 -m synapse.app.homeserver -c /etc/synapse/homeserver.yaml`, pip venvs and
//! `synctl`) or as a script (Debian's package runs
//! `/opt/venvs/matrix-synapse/bin/python .../site-packages/synapse/app/homeserver.py`).
//! The first argument must be a Python interpreter, and its own options are parsed the way
//! CPython parses them, so `grep synapse.app.homeserver`, `vim synapse/app/homeserver.py`,
//! `sudo -u synapse python3 -m synapse.app.homeserver` (the `sudo` process itself) and
//! `python3 -c '...synapse.app.homeserver...'` are not taken for a homeserver.

use std::{fmt, path::Path, path::PathBuf};

/// Prefix of every Synapse entry-point module.
const APP_PREFIX: &str = "synapse.app.";

/// What a Synapse process does, from its entry-point module.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// `synapse.app.homeserver`: the main process.
    Main,
    /// `synapse.app.generic_worker`: a worker.
    GenericWorker,
    /// `synapse.app.media_repository`: the (legacy) dedicated media worker.
    MediaRepository,
    /// Any other `synapse.app.*` module, by its full name (for example the deprecated
    /// worker aliases such as `synapse.app.federation_reader`, or `synapse.app.admin_cmd`).
    Other(String),
}

impl Role {
    /// The role of a `synapse.app.*` module, or `None` if `module` is not one.
    pub fn from_module(module: &str) -> Option<Role> {
        let name = module.strip_prefix(APP_PREFIX)?;
        if !name.split('.').all(is_public_identifier) {
            return None;
        }
        Some(match name {
            "homeserver" => Role::Main,
            "generic_worker" => Role::GenericWorker,
            "media_repository" => Role::MediaRepository,
            _ => Role::Other(module.to_owned()),
        })
    }

    /// The entry-point module of this role, e.g. `synapse.app.homeserver`.
    pub fn module(&self) -> &str {
        match self {
            Role::Main => "synapse.app.homeserver",
            Role::GenericWorker => "synapse.app.generic_worker",
            Role::MediaRepository => "synapse.app.media_repository",
            Role::Other(module) => module,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::Main => f.write_str("main"),
            Role::GenericWorker => f.write_str("generic_worker"),
            Role::MediaRepository => f.write_str("media_repository"),
            Role::Other(module) => f.write_str(module),
        }
    }
}

/// A Python identifier that is not private (`_base` is a helper module, not an entry point).
fn is_public_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// What a Python interpreter was asked to run.
#[derive(Debug, PartialEq, Eq)]
enum Program<'a> {
    /// `-m module`.
    Module(&'a str),
    /// A script path.
    Script(&'a str),
}

/// True when `argv0` names a Python interpreter (`python`, `python3`, `python3.11`,
/// `/opt/venvs/matrix-synapse/bin/python`, or PyPy, which Synapse also supports).
fn is_python(argv0: &str) -> bool {
    let base = argv0.rsplit('/').next().unwrap_or(argv0);
    base.starts_with("python") || base.starts_with("pypy")
}

/// Parses a Python interpreter's own options (`args[0]` is the interpreter) the way CPython
/// does and returns the program it runs with the arguments given to that program. `None` for
/// `-c command`, an interactive interpreter, or when `args[0]` is not Python.
fn split_program(args: &[String]) -> Option<(Program<'_>, &[String])> {
    if !is_python(args.first()?) {
        return None;
    }
    let mut i = 1;
    while let Some(arg) = args.get(i) {
        if arg == "--" {
            let script = args.get(i + 1)?;
            return Some((Program::Script(script), &args[i + 2..]));
        }
        if arg == "--check-hash-based-pycs" {
            i += 2;
            continue;
        }
        if arg.starts_with("--") {
            // --help, --version and friends: nothing runs.
            return None;
        }
        if arg == "-" || !arg.starts_with('-') {
            return Some((Program::Script(arg), &args[i + 1..]));
        }
        // A cluster of one-letter options such as `-u`, `-OO`, `-Wignore`, `-bm module`.
        let cluster = &arg[1..];
        let mut takes_next = false;
        for (pos, c) in cluster.char_indices() {
            let rest = &cluster[pos + c.len_utf8()..];
            match c {
                'm' if rest.is_empty() => {
                    let module = args.get(i + 1)?;
                    return Some((Program::Module(module), &args[i + 2..]));
                }
                'm' => return Some((Program::Module(rest), &args[i + 1..])),
                'c' => return None,
                'W' | 'X' => {
                    takes_next = rest.is_empty();
                    break;
                }
                _ => {}
            }
        }
        i += if takes_next { 2 } else { 1 };
    }
    None
}

/// The module a script path stands for when it ends in `synapse/app/NAME.py`.
fn script_module(script: &str) -> Option<String> {
    let mut parts = script.rsplit('/');
    let file = parts.next()?;
    let (Some("app"), Some("synapse")) = (parts.next(), parts.next()) else {
        return None;
    };
    Some(format!("{APP_PREFIX}{}", file.strip_suffix(".py")?))
}

/// The Synapse role of a process from its argv, or `None` if it is not a Synapse process.
///
/// Accepts `python3 -m synapse.app.NAME ...` and `python3 .../synapse/app/NAME.py ...`, where
/// the first argument is a Python interpreter; interpreter options before the module or
/// script (`-u`, `-O`, `-W ignore`, `-X dev`, ...) are skipped.
pub fn classify_cmdline(args: &[String]) -> Option<Role> {
    match split_program(args)?.0 {
        Program::Module(module) => Role::from_module(module),
        Program::Script(script) => Role::from_module(&script_module(script)?),
    }
}

/// The values of Synapse's `-c` / `--config-path` options, in order (each may be a file or
/// a directory of `*.yaml` files). Only the arguments after the module or script are
/// looked at, so the interpreter's own `-c command` is never mistaken for one; empty when
/// `args` is not a Python program.
pub fn config_paths(args: &[String]) -> Vec<PathBuf> {
    let Some((_, program_args)) = split_program(args) else {
        return Vec::new();
    };
    let mut paths = Vec::new();
    let mut iter = program_args.iter();
    while let Some(arg) = iter.next() {
        let value = if arg == "--" {
            break;
        } else if arg == "-c" || arg == "--config-path" {
            iter.next().map(String::as_str)
        } else if let Some(value) = arg.strip_prefix("--config-path=") {
            Some(value)
        } else if let Some(value) = arg.strip_prefix("-c").filter(|_| !arg.starts_with("--")) {
            // argparse accepts `-cPATH` and `-c=PATH`.
            Some(value.strip_prefix('=').unwrap_or(value))
        } else {
            None
        };
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            paths.push(Path::new(value).to_path_buf());
        }
    }
    paths
}

#[cfg(test)]
mod tests {
    use super::{Role, classify_cmdline, config_paths};
    use std::path::PathBuf;

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    const DEBIAN: &str = "/opt/venvs/matrix-synapse/bin/python \
        /opt/venvs/matrix-synapse/lib/python3.11/site-packages/synapse/app/homeserver.py \
        --config-path=/etc/matrix-synapse/homeserver.yaml \
        --config-path=/etc/matrix-synapse/conf.d/";

    #[test]
    fn debian_package_main_process() {
        let args = argv(DEBIAN);
        assert_eq!(classify_cmdline(&args), Some(Role::Main));
        assert_eq!(
            config_paths(&args),
            vec![
                PathBuf::from("/etc/matrix-synapse/homeserver.yaml"),
                PathBuf::from("/etc/matrix-synapse/conf.d/"),
            ]
        );
    }

    #[test]
    fn debian_package_worker_unit() {
        let args = argv(
            "/opt/venvs/matrix-synapse/bin/python -m synapse.app.generic_worker \
             --config-path=/etc/matrix-synapse/homeserver.yaml \
             --config-path=/etc/matrix-synapse/workers/worker1.yaml",
        );
        assert_eq!(classify_cmdline(&args), Some(Role::GenericWorker));
        assert_eq!(config_paths(&args).len(), 2);
    }

    #[test]
    fn pip_venv_worker_with_short_option() {
        let args = argv("python3 -m synapse.app.generic_worker -c /etc/synapse/worker1.yaml");
        assert_eq!(classify_cmdline(&args), Some(Role::GenericWorker));
        assert_eq!(
            config_paths(&args),
            vec![PathBuf::from("/etc/synapse/worker1.yaml")]
        );
    }

    #[test]
    fn synctl_started_main_and_media_repository() {
        let args = argv(
            "/home/synapse/env/bin/python3.11 -m synapse.app.homeserver --daemonize \
             -c homeserver.yaml",
        );
        assert_eq!(classify_cmdline(&args), Some(Role::Main));
        assert_eq!(config_paths(&args), vec![PathBuf::from("homeserver.yaml")]);
        let media = argv("python -m synapse.app.media_repository -c /etc/media.yaml");
        assert_eq!(classify_cmdline(&media), Some(Role::MediaRepository));
    }

    #[test]
    fn other_app_modules_keep_their_name() {
        let args = argv("python3 -m synapse.app.federation_reader -c w.yaml");
        let role = classify_cmdline(&args).expect("a synapse.app module");
        assert_eq!(role, Role::Other("synapse.app.federation_reader".into()));
        assert_eq!(role.module(), "synapse.app.federation_reader");
        assert_eq!(role.to_string(), "synapse.app.federation_reader");
        let script = argv("python3 /src/synapse/synapse/app/admin_cmd.py -c hs.yaml");
        assert_eq!(
            classify_cmdline(&script),
            Some(Role::Other("synapse.app.admin_cmd".into()))
        );
    }

    #[test]
    fn interpreter_options_before_the_module_are_skipped() {
        for line in [
            "python3 -u -m synapse.app.homeserver",
            "python3 -OO -msynapse.app.homeserver",
            "python3 -W ignore -X dev -m synapse.app.homeserver",
            "python3 -Wignore -bm synapse.app.homeserver",
            "python3 --check-hash-based-pycs never -m synapse.app.homeserver",
            "pypy3 -m synapse.app.homeserver",
            "python3 -- synapse/app/homeserver.py",
        ] {
            assert_eq!(classify_cmdline(&argv(line)), Some(Role::Main), "{line}");
        }
    }

    #[test]
    fn non_synapse_processes_are_rejected() {
        for line in [
            "grep synapse.app.homeserver",
            "vim synapse/app/homeserver.py",
            "/usr/bin/vim /opt/venvs/matrix-synapse/lib/python3.11/site-packages/synapse/app/homeserver.py",
            "sudo -u synapse python3 -m synapse.app.homeserver",
            "timeout 60 python3 -m synapse.app.generic_worker -c w.yaml",
            "python3 -c import synapse.app.homeserver",
            "python3 -m pip install matrix-synapse",
            "python3 /usr/bin/synctl start",
            "python3 -m synapse.app",
            "python3 -m synapse.app._base",
            "python3 -m synapse.appservice",
            "python3 synapse/app/homeserver.pyc",
            "python3 app/homeserver.py",
            "python3 -m",
            "python3",
            "python3 --version",
            "nginx: worker process",
            "",
        ] {
            assert_eq!(classify_cmdline(&argv(line)), None, "{line}");
        }
        assert_eq!(classify_cmdline(&[]), None);
    }

    #[test]
    fn config_path_forms() {
        let args = argv(
            "python3 -m synapse.app.homeserver -c a.yaml --config-path b.yaml \
             --config-path=c.yaml -cd.yaml -c=e.yaml --keys-directory k --config-path",
        );
        let want: Vec<PathBuf> = ["a.yaml", "b.yaml", "c.yaml", "d.yaml", "e.yaml"]
            .into_iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(config_paths(&args), want);
    }

    #[test]
    fn interpreter_dash_c_is_not_a_config_path() {
        assert!(config_paths(&argv("python3 -c print(1) -c x.yaml")).is_empty());
        assert!(config_paths(&argv("grep -c x.yaml")).is_empty());
    }

    #[test]
    fn role_names_and_modules() {
        assert_eq!(Role::Main.to_string(), "main");
        assert_eq!(Role::GenericWorker.to_string(), "generic_worker");
        assert_eq!(
            Role::MediaRepository.module(),
            "synapse.app.media_repository"
        );
        assert_eq!(
            Role::from_module("synapse.app.homeserver"),
            Some(Role::Main)
        );
        assert_eq!(Role::from_module("synapse.app.1x"), None);
    }
}
