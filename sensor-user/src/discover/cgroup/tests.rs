//! Tests of the cgroup v2 side, over real `mountinfo` lines and fake cgroup trees.

use super::{
    Dedication, cgroup_id, cgroup_procs, cgroup2_mount, is_dedicated, parse_mountinfo_cgroup2,
    resolve_cgroup_arg, unescape_mountinfo,
};
use crate::discover::{DiscoverError, testutil::FakeProc};
use std::{
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

/// `/proc/self/mountinfo` of this machine (Debian 12, hybrid layout), cgroup lines.
const HYBRID: &str = "\
22 1 254:0 / / rw,relatime - ext4 /dev/vda rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

/// A unified (cgroup v2 only) systemd host, with optional fields before the separator.
const UNIFIED: &str = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
33 25 0:28 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

/// A tree `system.slice/matrix-synapse.service` with `procs`, plus an empty root.
fn cgroup_tree(procs: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temporary directory");
    let service = dir.path().join("system.slice/matrix-synapse.service");
    fs::create_dir_all(&service).expect("create cgroup");
    fs::write(dir.path().join("cgroup.procs"), "1\n").expect("write root procs");
    fs::write(dir.path().join("system.slice/cgroup.procs"), "").expect("write slice procs");
    fs::write(service.join("cgroup.procs"), procs).expect("write procs");
    dir
}

#[test]
fn mountinfo_hybrid_and_unified() {
    assert_eq!(
        parse_mountinfo_cgroup2(HYBRID),
        Some(PathBuf::from("/sys/fs/cgroup/unified"))
    );
    assert_eq!(
        parse_mountinfo_cgroup2(UNIFIED),
        Some(PathBuf::from("/sys/fs/cgroup"))
    );
}

#[test]
fn mountinfo_without_cgroup2_or_only_a_bind_mounted_subtree() {
    let v1_only = HYBRID
        .lines()
        .filter(|l| !l.contains("cgroup2"))
        .collect::<Vec<_>>();
    assert_eq!(parse_mountinfo_cgroup2(&v1_only.join("\n")), None);
    let bind = "50 22 0:38 /system.slice /mnt/cg rw - cgroup2 cgroup2 rw\n";
    assert_eq!(parse_mountinfo_cgroup2(bind), None);
    assert_eq!(parse_mountinfo_cgroup2("garbage\n\n1 2\n - cgroup2"), None);
}

#[test]
fn mountinfo_escapes() {
    let line = "41 31 0:38 / /mnt/my\\040cgroups rw - cgroup2 cgroup2 rw\n";
    assert_eq!(
        parse_mountinfo_cgroup2(line),
        Some(PathBuf::from("/mnt/my cgroups"))
    );
    assert_eq!(unescape_mountinfo("a\\134b\\011"), PathBuf::from("a\\b\t"));
    assert_eq!(
        unescape_mountinfo("trailing\\04"),
        PathBuf::from("trailing\\04")
    );
    assert_eq!(unescape_mountinfo("\\999"), PathBuf::from("\\999"));
}

#[test]
fn cgroup2_mount_from_a_fake_proc_and_its_error() {
    let proc = FakeProc::new();
    proc.file("self/mountinfo", HYBRID);
    assert_eq!(
        cgroup2_mount(proc.root()).expect("mounted"),
        PathBuf::from("/sys/fs/cgroup/unified")
    );
    proc.file(
        "self/mountinfo",
        "32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw\n",
    );
    let err = cgroup2_mount(proc.root()).expect_err("v1 only");
    assert!(matches!(err, DiscoverError::NoCgroup2 { .. }));
    let msg = err.to_string();
    assert!(
        msg.starts_with("no cgroup v2 hierarchy is mounted"),
        "{msg}"
    );
    assert!(
        msg.contains("mount -t cgroup2 none /sys/fs/cgroup/unified"),
        "{msg}"
    );
}

#[test]
fn procs_and_id_of_a_fake_cgroup() {
    let tree = cgroup_tree("812\n900\nbogus\n\n");
    let rel = "/system.slice/matrix-synapse.service";
    assert_eq!(cgroup_procs(tree.path(), rel).expect("read"), [812, 900]);
    assert_eq!(cgroup_procs(tree.path(), "/").expect("read root"), [1]);
    let err = cgroup_procs(tree.path(), "/nope.service").expect_err("missing");
    assert!(matches!(err, DiscoverError::NoSuchCgroup { .. }), "{err}");

    let dir = tree.path().join("system.slice/matrix-synapse.service");
    let ino = fs::metadata(&dir).expect("stat").ino();
    assert_eq!(cgroup_id(&dir).expect("id"), ino);
    assert!(matches!(
        cgroup_id(&dir.join("gone")),
        Err(DiscoverError::ReadCgroup { .. })
    ));
}

#[test]
fn resolve_the_accepted_forms() {
    let tree = cgroup_tree("");
    let mount = tree.path();
    let want_abs = mount.join("system.slice/matrix-synapse.service");
    let absolute = want_abs.to_str().expect("utf-8 temp path").to_owned();
    for arg in [
        "/system.slice/matrix-synapse.service",
        "system.slice/matrix-synapse.service",
        "system.slice/./matrix-synapse.service/",
        absolute.as_str(),
    ] {
        let (rel, abs) = resolve_cgroup_arg(mount, arg).unwrap_or_else(|e| panic!("{arg}: {e}"));
        assert_eq!(rel, "/system.slice/matrix-synapse.service", "{arg}");
        assert_eq!(abs, want_abs, "{arg}");
    }
    let (rel, abs) = resolve_cgroup_arg(mount, "/").expect("root");
    assert_eq!((rel.as_str(), abs), ("/", mount.to_path_buf()));
}

#[test]
fn resolve_rejects_missing_and_outside_paths() {
    let tree = cgroup_tree("");
    let mount = tree.path().join("system.slice");
    let err = resolve_cgroup_arg(&mount, "nope.service").expect_err("missing");
    assert!(matches!(err, DiscoverError::NoSuchCgroup { .. }), "{err}");
    assert!(err.to_string().contains("does not exist"), "{err}");
    for arg in ["../system.slice", "/matrix-synapse.service/../.."] {
        let err = resolve_cgroup_arg(&mount, arg).expect_err(arg);
        assert!(
            matches!(err, DiscoverError::CgroupOutsideMount { .. }),
            "{arg}: {err}"
        );
    }
    // An existing directory that is not under the mount (say, a cgroup v1 hierarchy).
    let elsewhere = tree.path().to_str().expect("utf-8 temp path");
    let err = resolve_cgroup_arg(&mount, elsewhere).expect_err("outside");
    assert!(
        matches!(err, DiscoverError::CgroupOutsideMount { .. }),
        "{err}"
    );
    // A file, not a cgroup directory.
    let err = resolve_cgroup_arg(tree.path(), "cgroup.procs").expect_err("a file");
    assert!(matches!(err, DiscoverError::NoSuchCgroup { .. }), "{err}");
}

/// A fake proc with init (1), the main process (812), its child (850), grandchild (851),
/// a worker (900) and an unrelated shell (1234, child of init).
fn proc_tree() -> FakeProc {
    let proc = FakeProc::new();
    proc.process(1, 0, "systemd", &["/sbin/init"], "/init.scope");
    proc.process(
        812,
        1,
        "python",
        &["python", "-m", "synapse.app.homeserver"],
        "/s",
    );
    proc.process(850, 812, "sh", &["sh", "-c", "convert x"], "/s");
    proc.process(851, 850, "convert", &["convert", "x"], "/s");
    proc.process(
        900,
        1,
        "python",
        &["python", "-m", "synapse.app.generic_worker"],
        "/s",
    );
    proc.process(1234, 1, "bash", &["bash"], "/s");
    proc
}

#[test]
fn dedicated_when_only_watched_processes_and_descendants() {
    let proc = proc_tree();
    let rel = "/system.slice/matrix-synapse.service";
    let tree = cgroup_tree("812\n900\n");
    let verdict = is_dedicated(proc.root(), tree.path(), rel, &[812, 900]).expect("check");
    assert!(verdict.is_dedicated(), "{verdict}");

    let tree = cgroup_tree("812\n850\n851\n");
    let verdict = is_dedicated(proc.root(), tree.path(), rel, &[812]).expect("check");
    assert_eq!(verdict, Dedication::Dedicated);

    // 777 is listed but has exited: it no longer counts.
    let tree = cgroup_tree("812\n777\n");
    let verdict = is_dedicated(proc.root(), tree.path(), rel, &[812]).expect("check");
    assert_eq!(verdict, Dedication::Dedicated);
}

#[test]
fn not_dedicated_with_a_foreign_process_or_at_the_root() {
    let proc = proc_tree();
    let rel = "/system.slice/matrix-synapse.service";
    let tree = cgroup_tree("812\n1234\n");
    let verdict = is_dedicated(proc.root(), tree.path(), rel, &[812]).expect("check");
    assert_eq!(
        verdict,
        Dedication::ForeignProcess {
            pid: 1234,
            comm: "bash".into()
        }
    );
    assert!(verdict.to_string().contains("1234 (bash)"), "{verdict}");

    // The worker is a sibling, not a descendant, of the main process.
    let tree = cgroup_tree("812\n900\n");
    let verdict = is_dedicated(proc.root(), tree.path(), rel, &[812]).expect("check");
    assert!(matches!(
        verdict,
        Dedication::ForeignProcess { pid: 900, .. }
    ));

    for root in ["/", ""] {
        let verdict = is_dedicated(proc.root(), tree.path(), root, &[812]).expect("check");
        assert_eq!(verdict, Dedication::RootCgroup);
        assert!(!verdict.is_dedicated());
    }
}

#[test]
fn processes_in_child_cgroups_count() {
    let proc = proc_tree();
    let tree = cgroup_tree("812\n");
    let child = tree
        .path()
        .join("system.slice/matrix-synapse.service/extra");
    fs::create_dir_all(&child).expect("create child cgroup");
    fs::write(child.join("cgroup.procs"), "1234\n").expect("write procs");
    let rel = "system.slice/matrix-synapse.service";
    let verdict = is_dedicated(proc.root(), tree.path(), rel, &[812]).expect("check");
    assert!(matches!(
        verdict,
        Dedication::ForeignProcess { pid: 1234, .. }
    ));
}

#[test]
fn a_parent_cycle_in_a_corrupt_tree_terminates() {
    let proc = FakeProc::new();
    proc.process(10, 11, "a", &["a"], "/s");
    proc.process(11, 10, "b", &["b"], "/s");
    let tree = cgroup_tree("10\n");
    let rel = "/system.slice/matrix-synapse.service";
    let verdict = is_dedicated(proc.root(), tree.path(), rel, &[812]).expect("check");
    assert!(matches!(
        verdict,
        Dedication::ForeignProcess { pid: 10, .. }
    ));
}

/// On the real machine: when a cgroup v2 hierarchy is mounted, our own cgroup resolves and
/// lists us.
#[test]
fn real_cgroup_of_this_process() {
    let proc = Path::new("/proc");
    let mount = match cgroup2_mount(proc) {
        Ok(mount) => mount,
        Err(DiscoverError::NoCgroup2 { .. }) => return,
        Err(e) => panic!("reading the real mountinfo: {e}"),
    };
    let own = fs::read_to_string("/proc/self/cgroup").expect("read /proc/self/cgroup");
    let rel = crate::discover::procfs::parse_cgroup_file(&own).expect("a 0:: line");
    let (resolved, abs) = resolve_cgroup_arg(&mount, &rel).expect("our own cgroup resolves");
    assert_eq!(resolved, rel);
    assert!(cgroup_id(&abs).expect("cgroup id") > 0);
    let procs = cgroup_procs(&mount, &rel).expect("read our cgroup.procs");
    assert!(procs.contains(&std::process::id()), "{procs:?}");
}
