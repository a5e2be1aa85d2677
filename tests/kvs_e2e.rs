//! KVS mode end to end: the real daemon binary as the master of a channel on the KVS emulator
//! (SigV4-checked, the service's wire format and limits), real WebRTC viewers that signal
//! through it and decode what they receive.

mod support;

use std::time::Duration;

use kvs_emulator::EmulatorConfig;
use support::kvs::{CHANNEL, Kvs, connect_viewer};
use support::viewer::TestViewer;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trickle_and_non_trickle_viewers_decode_through_kvs() {
    let kvs = Kvs::start(EmulatorConfig::default(), &[]).await;

    // A browser-like viewer: trickles, and its first candidate arrives before its offer.
    let a = connect_viewer(&kvs, "viewer-trickle", true).await;
    let got = a.viewer.wait_frames(30, Duration::from_secs(20)).await;
    assert!(
        got.frames >= 30,
        "trickle viewer decoded {} frames\n{}",
        got.frames,
        kvs.daemon.log()
    );
    assert_eq!((got.width, got.height), (640, 480));
    assert!(
        a.trickled_from_master >= 1,
        "the master should trickle its candidates"
    );

    // A viewer that does not trickle gets one complete answer and decodes too.
    let b = connect_viewer(&kvs, "viewer-complete", false).await;
    let got = b.viewer.wait_frames(30, Duration::from_secs(20)).await;
    assert!(
        got.frames >= 30,
        "non-trickle viewer decoded {} frames",
        got.frames
    );
    assert_eq!(
        b.trickled_from_master, 0,
        "no candidates may follow a complete answer"
    );

    // Alexa's path: SendAlexaOfferToMaster over the channel's HTTPS API, answered in one go.
    let alexa = TestViewer::new(99).await;
    let offer = alexa.offer(true).await;
    let t0 = std::time::Instant::now();
    let answer = kvs
        .emu
        .send_alexa_offer(CHANNEL, "viewer-5f0c2a9e-alexa", &offer)
        .await
        .expect("SendAlexaOfferToMaster");
    let alexa_ms = t0.elapsed();
    assert!(answer.contains("a=candidate:"), "{answer}");
    assert!(!answer.contains("a=ice-options:trickle"), "{answer}");
    alexa.accept_answer(&answer).await;
    let got = alexa.wait_frames(15, Duration::from_secs(20)).await;
    assert!(
        got.frames >= 15,
        "Alexa-path viewer decoded {} frames",
        got.frames
    );
    assert!(
        alexa_ms < Duration::from_secs(3),
        "Alexa answer took {alexa_ms:?}"
    );

    eprintln!(
        "MEASURE kvs offer->answer: trickle {} ms, complete {} ms, SendAlexaOfferToMaster {} ms",
        a.offer_to_answer.as_millis(),
        b.offer_to_answer.as_millis(),
        alexa_ms.as_millis()
    );
    let stats = kvs.daemon_stats().await;
    assert_eq!(stats["kvs"]["state"], "connected", "{stats}");
    assert_eq!(stats["sessions"].as_array().unwrap().len(), 3, "{stats}");
    // The first viewer kept receiving through all of this.
    let before = a.viewer.decoded().frames;
    assert!(
        a.viewer
            .wait_frames(before + 10, Duration::from_secs(10))
            .await
            .frames
            >= before + 10
    );
}

/// `camgate kvs check` as a user runs it: every step passes against a healthy channel, and a
/// wrong channel or bad keys are named in plain words with a failing exit status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kvs_check_reports_each_step_and_names_what_is_wrong() {
    let emu = kvs_emulator::Emulator::start(EmulatorConfig::default())
        .await
        .unwrap();
    emu.create_channel(CHANNEL).unwrap();
    let run = |extra: &[(&str, &str)]| {
        let env = support::kvs::kvs_env(&emu, extra);
        async move {
            let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_camgate"));
            cmd.args(["kvs", "check"]);
            for (k, _) in std::env::vars() {
                if k.starts_with("CAMGATE__") || k.starts_with("AWS_") {
                    cmd.env_remove(k);
                }
            }
            let out = cmd.envs(env).output().await.unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            (out.status.success(), text)
        }
    };

    let (ok, text) = run(&[]).await;
    assert!(ok, "check failed against a healthy channel:\n{text}");
    for step in [
        "credentials",
        "describe",
        "endpoints",
        "ice-config",
        "websocket",
    ] {
        assert!(text.contains(step), "no {step} step in:\n{text}");
    }

    if std::env::var_os("CAMGATE_TEST_ECHO").is_some() {
        eprintln!("{text}");
    }
    let (ok, text) = run(&[("CAMGATE__KVS__CHANNEL_NAME", "no-such-door")]).await;
    if std::env::var_os("CAMGATE_TEST_ECHO").is_some() {
        eprintln!("{text}");
    }
    assert!(!ok, "{text}");
    assert!(
        text.contains("no-such-door") && text.to_lowercase().contains("not found"),
        "{text}"
    );

    // A wrong secret: the credentials are found (that step passes), the first signed call
    // is refused, and the report says the secret is what is wrong.
    let (ok, text) = run(&[("AWS_SECRET_ACCESS_KEY", "wrong-secret")]).await;
    assert!(!ok, "{text}");
    let line = |step: &str| {
        text.lines()
            .find(|l| l.contains(&format!("] {step} ")))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(line("credentials").starts_with("[ ok ]"), "{text}");
    let describe = line("describe");
    assert!(
        describe.starts_with("[FAIL]")
            && describe.contains("InvalidSignatureException")
            && describe.contains("secret access key is wrong"),
        "{text}"
    );
    assert!(
        !text.contains("wrong-secret"),
        "the secret is printed:\n{text}"
    );
}
