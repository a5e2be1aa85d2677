//! The CLI's packaging side: `camgate generate` (man pages and shell completions, which
//! scripts/build-deb.sh puts in the .deb) and systemd credentials (`LoadCredential=`) read as
//! `CAMGATE__*` variables.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn camgate() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_camgate"));
    // The test's own environment must not leak settings in.
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy()
            .to_ascii_uppercase()
            .starts_with("CAMGATE__")
        {
            cmd.env_remove(k);
        }
    }
    cmd.env_remove("CREDENTIALS_DIRECTORY");
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("camgate runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// An empty directory of this test's own.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("camgate-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn shipped_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/camgate.toml")
}

#[test]
fn generate_man_writes_one_page_per_visible_command() {
    let dir = scratch("man");
    let out = run(camgate().args(["generate", "man"]).arg(&dir));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut pages: Vec<String> = std::fs::read_dir(&dir)
        .expect("man dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    assert_eq!(
        pages,
        [
            "camgate-check-config.1",
            "camgate-kvs-check.1",
            "camgate-kvs.1",
            "camgate-probe.1",
            "camgate-run.1",
            "camgate.1"
        ]
    );
    let main = std::fs::read_to_string(dir.join("camgate.1")).expect("camgate.1");
    assert!(main.contains(".TH camgate 1"), "{main}");
    assert!(main.contains("check\\-config"), "{main}");
    assert!(
        !main.contains("generate"),
        "the hidden command is documented: {main}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn generate_completions_for_bash_zsh_and_fish() {
    for shell in ["bash", "zsh", "fish"] {
        let out = run(camgate().args(["generate", "completions", shell]));
        assert!(out.status.success(), "{shell}: {}", text(&out.stderr));
        let script = text(&out.stdout);
        assert!(script.contains("check-config"), "{shell}: {script}");
        assert!(script.contains("config"), "{shell}: {script}");
        assert!(
            !script.contains("generate"),
            "{shell} completes the hidden command"
        );
    }
    let out = run(camgate().args(["generate", "completions", "tcsh"]));
    assert!(!out.status.success(), "an unknown shell is a usage error");
}

#[test]
fn systemd_credentials_act_as_configuration_variables() {
    let dir = scratch("creds");
    let write = |name: &str, value: &str| {
        std::fs::write(dir.join(name), value).expect("credential file");
    };
    write("CAMGATE__HTTP__LISTEN", "127.0.0.1:18181\n");
    write("CAMGATE__SOURCE__USERNAME", "viewer\n");
    write("CAMGATE__SOURCE__PASSWORD", "cred-s3cret\r\n");
    write("unrelated-credential", "ignored");

    let check = |extra_env: Option<(&str, &str)>| {
        let mut cmd = camgate();
        cmd.arg("check-config")
            .arg("--config")
            .arg(shipped_config())
            .env("CREDENTIALS_DIRECTORY", &dir);
        if let Some((k, v)) = extra_env {
            cmd.env(k, v);
        }
        run(&mut cmd)
    };

    let out = check(None);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("listen = \"127.0.0.1:18181\""), "{stdout}");
    assert!(stdout.contains("username = \"viewer\""), "{stdout}");
    assert!(
        !stdout.contains("cred-s3cret"),
        "the secret is printed: {stdout}"
    );

    // A variable in the environment wins over a credential of the same name.
    let out = check(Some(("CAMGATE__HTTP__LISTEN", "127.0.0.1:18282")));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("listen = \"127.0.0.1:18282\""), "{stdout}");

    // A credential with a bad value is reported like the variable it stands for.
    write("CAMGATE__HTTP__LISTEN", "not-an-address\n");
    let out = check(None);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("CAMGATE__HTTP__LISTEN"),
        "{}",
        text(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
