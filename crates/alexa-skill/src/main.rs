//! `camgate-alexa-skill`: the Lambda driver. It polls the Lambda Runtime API
//! (`AWS_LAMBDA_RUNTIME_API`) through `lambda_runtime` and answers every directive with
//! [`camgate_alexa_skill::Skill::invoke`]; it never fails an invocation, since Alexa wants an
//! `Alexa.ErrorResponse` rather than a Lambda error.

use std::process::ExitCode;
use std::sync::Arc;

use camgate_alexa_skill::Skill;
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;

const USAGE: &str = "\
camgate-alexa-skill: the Alexa Smart Home skill (AWS Lambda, provided.al2023) for camgate cameras.

It runs under the Lambda Runtime API and is configured by environment variables:
  CAMGATE_CAMERAS   JSON array of cameras: endpoint_id, friendly_name, channel_name or
                    channel_arn, display_category (CAMERA|DOORBELL), full_duplex (bool)
  AWS_REGION        the region of the KVS channels (Lambda sets it)
  AWS credentials   the function's role (Lambda sets them)
  AWS_ENDPOINT_URL_KINESIS_VIDEO   optional control-plane endpoint override

See docs/alexa.md in the camgate sources.";

/// What `lambda_runtime` needs from the environment; without them it would panic.
const RUNTIME_ENV: [&str; 4] = [
    "AWS_LAMBDA_RUNTIME_API",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION",
];

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    if std::env::args().skip(1).any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    if std::env::args()
        .skip(1)
        .any(|a| a == "--version" || a == "-V")
    {
        println!("camgate-alexa-skill {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let missing: Vec<&str> = RUNTIME_ENV
        .into_iter()
        .filter(|k| std::env::var_os(k).is_none())
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "camgate-alexa-skill runs inside AWS Lambda (or under a Lambda Runtime API emulator); \
             not set: {}\n\n{USAGE}",
            missing.join(", ")
        );
        return ExitCode::from(2);
    }
    lambda_runtime::tracing::init_default_subscriber();
    let skill = Arc::new(Skill::from_env().await);
    let handler = service_fn(move |event: LambdaEvent<Value>| {
        let skill = skill.clone();
        async move {
            let out = skill.invoke(&event.payload, event.context.deadline).await;
            Ok::<Value, std::convert::Infallible>(out)
        }
    });
    match lambda_runtime::run(handler).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("Lambda Runtime API: {e}");
            ExitCode::FAILURE
        }
    }
}
