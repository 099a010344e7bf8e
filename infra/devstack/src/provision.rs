//! Creates the template's tables (in DynamoDB Local), buckets, queues and secrets (in moto server) of the
//! local AWS stack. Idempotent: what exists is kept (with its data), so restarting loses nothing.

use std::collections::{BTreeMap, HashMap};

use anyhow::{Context as _, bail};
use aws_config::SdkConfig;
use rand::Rng;
use rand::distr::Alphanumeric;
use serde_norway::Value;

use crate::template::{Resolver, Template, resolve, scalar};

pub const REGION: &str = "us-east-1";
/// moto's default account.
pub const ACCOUNT: &str = "123456789012";

/// Template parameters of every local stack: relaxed outbound rules (plain http and loopback, so
/// local file servers stand in for Spark's storage), and a web app origin for browser flows.
pub const LOCAL_PARAMETERS: [(&str, &str); 9] = [
    ("Stage", "local"),
    // The dev gateway's address: links in emails open its pages.
    ("PublicBaseUrl", "http://127.0.0.1:3000"),
    ("EmailSender", "no-reply@hub.local"),
    ("FrontendUrl", "http://localhost:5173"),
    // Spark's partner organization: only its quests may map Spark assignments (the README tour's `demo`).
    ("SparkOrganizationId", "demo"),
    ("SparkStorageDomains", "127.0.0.1"),
    ("OutboundAllowLoopback", "true"),
    // The Clever simulator `make dev` runs (infra/clever-sim).
    ("CleverApiUrl", "http://127.0.0.1:4600"),
    ("CleverOauthUrl", "http://127.0.0.1:4600/oauth/tokens"),
];

/// The AWS services the local stack provisions and the functions call, by the SDK's service ids (the
/// `AWS_ENDPOINT_URL_<SERVICE>` variables are named after them: `AWS_ENDPOINT_URL_DYNAMODB`...).
pub const SERVICES: [&str; 6] = ["DynamoDB", "S3", "SQS", "Secrets Manager", "SESv2", "SNS"];

/// The endpoint each service resolves to, exactly as the SDK's clients resolve it from `sdk`
/// (`AWS_ENDPOINT_URL_<SERVICE>`, the profile's `services` section, `AWS_ENDPOINT_URL`, the profile's
/// `endpoint_url`). Refuses when a service has none (it would reach AWS itself) or one off loopback.
pub fn local_endpoints(sdk: &SdkConfig) -> anyhow::Result<Vec<(&'static str, String)>> {
    let mut out = Vec::new();
    for service in SERVICES {
        let key = aws_types::service_config::ServiceConfigKey::builder()
            .service_id(service)
            .env("AWS_ENDPOINT_URL")
            .profile("endpoint_url")
            .build()?;
        let variable = format!("AWS_ENDPOINT_URL_{}", service.to_uppercase().replace(' ', "_"));
        let endpoint = sdk
            .service_config()
            .and_then(|c| c.load_config(key))
            .or_else(|| sdk.endpoint_url().map(str::to_string))
            .with_context(|| {
                format!("no endpoint for {service}: set AWS_ENDPOINT_URL (or {variable}) to the local AWS stack")
            })?;
        let host = url::Url::parse(&endpoint)
            .with_context(|| format!("{service} endpoint {endpoint}"))?
            .host_str()
            .unwrap_or_default()
            .to_string();
        if !matches!(host.as_str(), "127.0.0.1" | "localhost" | "[::1]") {
            bail!(
                "refusing {service} endpoint {endpoint} (AWS_ENDPOINT_URL or {variable}): the local stack must be on loopback"
            );
        }
        out.push((service, endpoint));
    }
    Ok(out)
}

/// Parses `--parameter-overrides` as `sam local start-api` takes them: `Key=Value` pairs separated by
/// spaces (values may be quoted), or sam's long form `ParameterKey=Key,ParameterValue=Value`. Every key
/// must be a parameter of the template (`known`). Later pairs win.
pub fn parse_parameter_overrides(specs: &[String], known: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for spec in specs {
        for word in split_words(spec)? {
            let (key, value) = match word.strip_prefix("ParameterKey=") {
                Some(long) => {
                    let (key, value) = long
                        .split_once(",ParameterValue=")
                        .with_context(|| format!("{word}: expected ParameterKey=Key,ParameterValue=Value"))?;
                    (key.to_string(), value.to_string())
                }
                None => {
                    let (key, value) = word
                        .split_once('=')
                        .with_context(|| format!("parameter override {word:?} is not Key=Value"))?;
                    (key.to_string(), value.to_string())
                }
            };
            if !known.contains(&key) {
                bail!("template.yaml has no parameter {key:?} (its parameters: {})", known.join(", "));
            }
            out.push((key, value));
        }
    }
    Ok(out)
}

/// Splits on whitespace outside single or double quotes, dropping the quotes.
fn split_words(text: &str) -> anyhow::Result<Vec<String>> {
    let (mut words, mut word, mut quote, mut in_word) = (Vec::new(), String::new(), None, false);
    for c in text.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        bail!("unclosed quote in parameter overrides {text:?}");
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// The local stack: physical names of everything the template declares.
pub struct LocalStack {
    pub name: String,
    pub parameters: HashMap<String, String>,
    pub refs: HashMap<String, String>,
    pub arns: HashMap<String, String>,
}

impl LocalStack {
    pub fn resolver(&self) -> Resolver<'_> {
        Resolver {
            stack_name: &self.name,
            region: REGION,
            account: ACCOUNT,
            parameters: &self.parameters,
            refs: &self.refs,
            arns: &self.arns,
        }
    }

    /// A function's environment as Lambda would set it from the template.
    pub fn function_env(&self, template: &Template, logical_id: &str) -> anyhow::Result<BTreeMap<String, String>> {
        template.function_env(logical_id, &self.resolver())
    }
}

/// Creates (or finds) every resource. `parameters` override the template's defaults.
pub async fn provision(
    template: &Template,
    stack: &str,
    sdk: &SdkConfig,
    parameters: &[(&str, &str)],
) -> anyhow::Result<LocalStack> {
    let mut out = LocalStack {
        name: stack.to_string(),
        parameters: template.parameters(parameters),
        refs: HashMap::new(),
        arns: HashMap::new(),
    };
    let ddb = aws_sdk_dynamodb::Client::new(sdk);
    for (id, props) in template.resources_of_type("AWS::DynamoDB::Table") {
        let name = format!("{stack}-{id}");
        let arn = create_table(&ddb, &name, &props).await.with_context(|| format!("table {id}"))?;
        out.refs.insert(id.clone(), name);
        out.arns.insert(id, arn);
    }
    let s3 = aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(sdk).force_path_style(true).build());
    for (id, _) in template.resources_of_type("AWS::S3::Bucket") {
        let name = format!("{stack}-{id}").to_lowercase();
        match s3.create_bucket().bucket(&name).send().await {
            Ok(_) => {}
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_bucket_already_owned_by_you() || s.is_bucket_already_exists()) => {}
            Err(e) => {
                return Err(anyhow::anyhow!(aws_sdk_s3::error::DisplayErrorContext(e))).context(format!("bucket {id}"));
            }
        }
        out.arns.insert(id.clone(), format!("arn:aws:s3:::{name}"));
        out.refs.insert(id, name);
    }
    let sqs = aws_sdk_sqs::Client::new(sdk);
    // Dead-letter queues first: the others name their ARN.
    let mut queues = template.resources_of_type("AWS::SQS::Queue");
    queues.sort_by_key(|(_, p)| p.get("RedrivePolicy").is_some());
    for (id, props) in queues {
        let name = format!("{stack}-{id}");
        let (url, arn) = create_queue(&sqs, &name, &props, &out).await.with_context(|| format!("queue {id}"))?;
        out.refs.insert(id.clone(), url);
        out.arns.insert(id, arn);
    }
    let sm = aws_sdk_secretsmanager::Client::new(sdk);
    let mut new_secrets = Vec::new();
    for (id, props) in template.resources_of_type("AWS::SecretsManager::Secret") {
        let name = format!("{stack}/{id}");
        let (arn, created) = create_secret(&sm, &name, &props).await.with_context(|| format!("secret {id}"))?;
        if created {
            new_secrets.push(id.clone());
        }
        out.refs.insert(id.clone(), arn.clone());
        out.arns.insert(id, arn);
    }
    // Topics (subscriptions are not created locally: a test or a user subscribes a queue to see messages).
    let sns = aws_sdk_sns::Client::new(sdk);
    for (id, _) in template.resources_of_type("AWS::SNS::Topic") {
        let name = format!("{stack}-{id}");
        let arn = sns
            .create_topic()
            .name(&name)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!(aws_sdk_sns::error::DisplayErrorContext(e)))
            .with_context(|| format!("topic {id}"))?
            .topic_arn
            .with_context(|| format!("topic {id}: no ARN"))?;
        out.refs.insert(id.clone(), arn.clone());
        out.arns.insert(id, arn);
    }
    // Email identities, so the local SES accepts their sender (it refuses unverified ones, as SES does).
    let ses = aws_sdk_sesv2::Client::new(sdk);
    for (id, props) in template.resources_of_type("AWS::SES::EmailIdentity") {
        let identity = crate::template::resolve(&props["EmailIdentity"], &out.resolver())
            .with_context(|| format!("email identity {id}"))?;
        match ses.create_email_identity().email_identity(&identity).send().await {
            Ok(_) => {}
            Err(e) if e.as_service_error().is_some_and(|s| s.is_already_exists_exception()) => {}
            Err(e) => {
                return Err(anyhow::anyhow!(aws_sdk_sesv2::error::DisplayErrorContext(e)))
                    .context(format!("email identity {id}"));
            }
        }
        out.refs.insert(id, identity);
    }
    // Resources the local stack does not create but functions may name.
    for (id, kind, _) in template.resources() {
        if kind == "AWS::Serverless::HttpApi" {
            out.refs.entry(id).or_insert_with(|| "local".to_string());
        }
    }
    rotate_new_secrets(template, &out, sdk, &new_secrets).await?;
    Ok(out)
}

/// A secret with a rotation schedule that rotates "immediately on update" gets its first rotation when
/// it is created, as in AWS: its rotation function (the real handler, with its template environment)
/// runs every step in-process.
async fn rotate_new_secrets(
    template: &Template,
    stack: &LocalStack,
    sdk: &SdkConfig,
    new_secrets: &[String],
) -> anyhow::Result<()> {
    for (id, props) in template.resources_of_type("AWS::SecretsManager::RotationSchedule") {
        let secret = crate::template::ref_target(&props["SecretId"]).with_context(|| format!("{id}: SecretId"))?;
        let immediately = props.get("RotateImmediatelyOnUpdate").is_none_or(|v| v.as_bool() != Some(false));
        if !immediately || !new_secrets.contains(&secret) {
            continue;
        }
        let function = crate::template::ref_target(&props["RotationLambdaARN"])
            .with_context(|| format!("{id}: RotationLambdaARN"))?;
        let def = template
            .functions()?
            .into_iter()
            .find(|f| f.logical_id == function)
            .with_context(|| format!("{id}: no function {function}"))?;
        let handler = hub::functions::ALL
            .iter()
            .find(|f| f.name == def.binary)
            .and_then(|f| match f.handler {
                hub::functions::Handler::Schedule(h) => Some(h),
                _ => None,
            })
            .with_context(|| format!("{}: not an event function", def.binary))?;
        let env = stack.function_env(template, &function)?;
        let ctx =
            std::sync::Arc::new(hub::Context::new(hub::Config::from_lookup(|k| env.get(k).cloned())?, sdk.clone()));
        // Secrets Manager's request tokens are 32 to 64 characters.
        let token = format!("{:032x}", rand::random::<u128>());
        let arn = stack.arns.get(&secret).with_context(|| format!("no ARN for {secret}"))?;
        for step in ["createSecret", "setSecret", "testSecret", "finishSecret"] {
            let event = serde_json::json!({"SecretId": arn, "ClientRequestToken": token, "Step": step});
            handler(ctx.clone(), event).await.map_err(|e| anyhow::anyhow!("{id}: {step}: {}", e.message))?;
        }
    }
    Ok(())
}

async fn create_table(client: &aws_sdk_dynamodb::Client, name: &str, props: &Value) -> anyhow::Result<String> {
    use aws_sdk_dynamodb::types::*;
    let key_schema = |v: &Value| -> anyhow::Result<Vec<KeySchemaElement>> {
        v.as_sequence()
            .context("KeySchema")?
            .iter()
            .map(|k| {
                Ok(KeySchemaElement::builder()
                    .attribute_name(scalar(&k["AttributeName"]))
                    .key_type(KeyType::from(scalar(&k["KeyType"]).as_str()))
                    .build()?)
            })
            .collect()
    };
    let mut req = client.create_table().table_name(name).billing_mode(BillingMode::PayPerRequest);
    for a in props["AttributeDefinitions"].as_sequence().context("AttributeDefinitions")? {
        req = req.attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(scalar(&a["AttributeName"]))
                .attribute_type(ScalarAttributeType::from(scalar(&a["AttributeType"]).as_str()))
                .build()?,
        );
    }
    req = req.set_key_schema(Some(key_schema(&props["KeySchema"])?));
    for g in props["GlobalSecondaryIndexes"].as_sequence().into_iter().flatten() {
        let projection = Projection::builder()
            .projection_type(ProjectionType::from(scalar(&g["Projection"]["ProjectionType"]).as_str()))
            .set_non_key_attributes(
                g["Projection"]["NonKeyAttributes"].as_sequence().map(|s| s.iter().map(scalar).collect()),
            )
            .build();
        req = req.global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(scalar(&g["IndexName"]))
                .set_key_schema(Some(key_schema(&g["KeySchema"])?))
                .projection(projection)
                .build()?,
        );
    }
    match req.send().await {
        Ok(_) => {}
        Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_in_use_exception()) => {}
        Err(e) => bail!(aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string()),
    }
    let ttl = &props["TimeToLiveSpecification"];
    if ttl["Enabled"].as_bool() == Some(true) {
        let spec =
            TimeToLiveSpecification::builder().attribute_name(scalar(&ttl["AttributeName"])).enabled(true).build()?;
        // Already enabled on a kept table: nothing to do.
        let _ = client.update_time_to_live().table_name(name).time_to_live_specification(spec).send().await;
    }
    let described = client.describe_table().table_name(name).send().await?;
    described.table.and_then(|t| t.table_arn).context("table without ARN")
}

async fn create_queue(
    client: &aws_sdk_sqs::Client,
    name: &str,
    props: &Value,
    stack: &LocalStack,
) -> anyhow::Result<(String, String)> {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let mut attributes = HashMap::new();
    for (key, attr) in [
        ("VisibilityTimeout", A::VisibilityTimeout),
        ("MessageRetentionPeriod", A::MessageRetentionPeriod),
        ("DelaySeconds", A::DelaySeconds),
        ("ReceiveMessageWaitTimeSeconds", A::ReceiveMessageWaitTimeSeconds),
    ] {
        if let Some(v) = props.get(key) {
            attributes.insert(attr, scalar(v));
        }
    }
    if let Some(redrive) = props.get("RedrivePolicy") {
        let target = resolve(&redrive["deadLetterTargetArn"], &stack.resolver())?;
        let policy = serde_json::json!({
            "deadLetterTargetArn": target,
            "maxReceiveCount": scalar(&redrive["maxReceiveCount"]).parse::<i64>().context("maxReceiveCount")?,
        });
        attributes.insert(A::RedrivePolicy, policy.to_string());
    }
    let url = match client.create_queue().queue_name(name).set_attributes(Some(attributes.clone())).send().await {
        Ok(out) => out.queue_url.context("queue without URL")?,
        Err(e) if e.as_service_error().is_some_and(|s| s.is_queue_name_exists()) => {
            let url = client.get_queue_url().queue_name(name).send().await?.queue_url.context("queue without URL")?;
            client.set_queue_attributes().queue_url(&url).set_attributes(Some(attributes)).send().await?;
            url
        }
        Err(e) => bail!(aws_sdk_sqs::error::DisplayErrorContext(e).to_string()),
    };
    let attrs = client.get_queue_attributes().queue_url(&url).attribute_names(A::QueueArn).send().await?;
    let arn = attrs.attributes.and_then(|mut a| a.remove(&A::QueueArn)).context("queue without ARN")?;
    Ok((url, arn))
}

/// The secret's ARN, and whether it was created now (it may exist from an earlier `make dev`).
async fn create_secret(
    client: &aws_sdk_secretsmanager::Client,
    name: &str,
    props: &Value,
) -> anyhow::Result<(String, bool)> {
    let value = match (props.get("SecretString"), props.get("GenerateSecretString")) {
        (Some(v), _) => scalar(v),
        (None, Some(g)) => {
            let length = g.get("PasswordLength").and_then(Value::as_u64).unwrap_or(32) as usize;
            let generated: String = rand::rng().sample_iter(&Alphanumeric).take(length).map(char::from).collect();
            match (g.get("SecretStringTemplate"), g.get("GenerateStringKey")) {
                (Some(t), Some(k)) => {
                    let mut doc: serde_json::Value =
                        serde_json::from_str(&scalar(t)).context("SecretStringTemplate")?;
                    doc[scalar(k)] = serde_json::Value::String(generated);
                    doc.to_string()
                }
                _ => generated,
            }
        }
        // Filled in by an operator (for example per-district credentials): start empty.
        (None, None) => "{}".to_string(),
    };
    match client.create_secret().name(name).secret_string(value).send().await {
        Ok(out) => Ok((out.arn.context("secret without ARN")?, true)),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_exists_exception()) => {
            Ok((client.describe_secret().secret_id(name).send().await?.arn.context("secret without ARN")?, false))
        }
        Err(e) => bail!(aws_sdk_secretsmanager::error::DisplayErrorContext(e).to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> Vec<String> {
        ["CleverApiUrl", "CleverOauthUrl", "Stage"].map(String::from).to_vec()
    }

    #[test]
    fn parameter_overrides_take_sams_forms() {
        let specs = [
            "CleverApiUrl=https://api.clever.com  CleverOauthUrl=https://clever.com/oauth/tokens?a=b".to_string(),
            "ParameterKey=Stage,ParameterValue=dev".to_string(),
            "Stage='two words' CleverApiUrl=\"x y\"".to_string(),
        ];
        let parsed = parse_parameter_overrides(&specs, &known()).unwrap();
        let pairs: Vec<(&str, &str)> = parsed.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            pairs,
            [
                ("CleverApiUrl", "https://api.clever.com"),
                ("CleverOauthUrl", "https://clever.com/oauth/tokens?a=b"),
                ("Stage", "dev"),
                ("Stage", "two words"),
                ("CleverApiUrl", "x y"),
            ]
        );
        assert!(parse_parameter_overrides(&[String::new()], &known()).unwrap().is_empty());
    }

    #[test]
    fn parameter_overrides_refuse_what_they_cannot_apply() {
        for bad in ["NoSuchParameter=1", "CleverApiUrl", "Stage='open", "ParameterKey=Stage"] {
            assert!(parse_parameter_overrides(&[bad.to_string()], &known()).is_err(), "{bad}");
        }
    }
}
