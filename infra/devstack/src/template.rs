//! Reads template.yaml: functions with their binaries and events, resources, parameters and the
//! environment each function gets, with the intrinsics the template uses (`!Ref`, `!GetAtt`, `!Sub`)
//! resolved against the local stack.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{Context as _, bail};
use serde_norway::Value;

pub struct Template {
    root: Value,
}

/// A function of the template.
#[derive(Clone, Debug)]
pub struct FunctionDef {
    pub logical_id: String,
    /// `Metadata.BuildProperties.Binary`: the binary in functions/src/bin and the `hub::functions` name.
    pub binary: String,
    pub routes: Vec<Route>,
    /// Logical ids of the SQS queues this function consumes, with their batch size.
    pub queues: Vec<(String, i64)>,
    /// Schedule expressions (EventBridge) that trigger this function.
    pub schedules: Vec<String>,
    /// Secrets whose rotation (Secrets Manager) calls this function.
    pub rotations: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub method: String,
    pub path: String,
}

impl Route {
    /// API Gateway's route key, e.g. `GET /api/auth/me`.
    pub fn key(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// What intrinsics resolve to in one deployed (or local) stack.
pub struct Resolver<'a> {
    pub stack_name: &'a str,
    pub region: &'a str,
    pub account: &'a str,
    pub parameters: &'a HashMap<String, String>,
    /// `!Ref` of resources (table name, queue URL, secret ARN...).
    pub refs: &'a HashMap<String, String>,
    /// `!GetAtt X.Arn` of resources.
    pub arns: &'a HashMap<String, String>,
}

impl Template {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Ok(Self { root: serde_norway::from_str(&text)? })
    }

    /// A function's timeout in seconds: its own, else the template's global one (else Lambda's 3).
    pub fn timeout(&self, function: &FunctionDef) -> i64 {
        let own = self.root["Resources"][function.logical_id.as_str()]["Properties"]["Timeout"].as_i64();
        own.or_else(|| self.root["Globals"]["Function"]["Timeout"].as_i64()).unwrap_or(3)
    }

    /// (logical id, type, properties) of every resource, in file order.
    pub fn resources(&self) -> Vec<(String, String, Value)> {
        let Some(map) = self.root.get("Resources").and_then(Value::as_mapping) else {
            return vec![];
        };
        map.iter()
            .filter_map(|(k, v)| {
                Some((
                    k.as_str()?.to_string(),
                    v.get("Type")?.as_str()?.to_string(),
                    v.get("Properties").cloned().unwrap_or(Value::Null),
                ))
            })
            .collect()
    }

    pub fn resources_of_type(&self, kind: &str) -> Vec<(String, Value)> {
        self.resources().into_iter().filter(|(_, t, _)| t == kind).map(|(id, _, p)| (id, p)).collect()
    }

    /// The names of the template's parameters, in file order.
    pub fn parameter_names(&self) -> Vec<String> {
        self.root
            .get("Parameters")
            .and_then(Value::as_mapping)
            .map(|map| map.keys().filter_map(|k| k.as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    }

    /// Parameter defaults, overridden by `overrides`.
    pub fn parameters(&self, overrides: &[(&str, &str)]) -> HashMap<String, String> {
        let mut out = HashMap::new();
        if let Some(map) = self.root.get("Parameters").and_then(Value::as_mapping) {
            for (k, v) in map {
                if let (Some(k), Some(d)) = (k.as_str(), v.get("Default")) {
                    out.insert(k.to_string(), scalar(d));
                }
            }
        }
        for (k, v) in overrides {
            out.insert(k.to_string(), v.to_string());
        }
        out
    }

    pub fn functions(&self) -> anyhow::Result<Vec<FunctionDef>> {
        let mut out = Vec::new();
        for (id, kind, props) in self.resources() {
            if kind != "AWS::Serverless::Function" {
                continue;
            }
            let binary = self.root["Resources"][id.as_str()]["Metadata"]["BuildProperties"]["Binary"]
                .as_str()
                .with_context(|| format!("{id} has no Metadata.BuildProperties.Binary"))?
                .to_string();
            let rotations = self
                .resources_of_type("AWS::SecretsManager::RotationSchedule")
                .into_iter()
                .filter(|(_, p)| ref_target(&p["RotationLambdaARN"]).as_deref() == Some(id.as_str()))
                .filter_map(|(_, p)| ref_target(&p["SecretId"]))
                .collect();
            let mut def = FunctionDef {
                logical_id: id.clone(),
                binary,
                routes: vec![],
                queues: vec![],
                schedules: vec![],
                rotations,
            };
            if let Some(events) = props.get("Events").and_then(Value::as_mapping) {
                for (_, event) in events {
                    let p = &event["Properties"];
                    match event["Type"].as_str() {
                        Some("HttpApi") => def.routes.push(Route {
                            method: p["Method"].as_str().unwrap_or("ANY").to_uppercase(),
                            path: p["Path"]
                                .as_str()
                                .with_context(|| format!("{id}: HttpApi event without Path"))?
                                .to_string(),
                        }),
                        Some("SQS") => {
                            let queue = ref_target(&p["Queue"])
                                .with_context(|| format!("{id}: SQS event Queue must be !GetAtt X.Arn"))?;
                            def.queues.push((queue, p["BatchSize"].as_i64().unwrap_or(10)));
                        }
                        Some("Schedule") | Some("ScheduleV2") => {
                            let expr = p.get("Schedule").or_else(|| p.get("ScheduleExpression"));
                            def.schedules.push(expr.map(scalar).unwrap_or_default());
                        }
                        Some(other) => {
                            bail!("{id}: event type {other} is not supported by the local stack")
                        }
                        None => bail!("{id}: event without Type"),
                    }
                }
            }
            out.push(def);
        }
        Ok(out)
    }

    /// The environment of one function: globals, then its own variables, intrinsics resolved.
    pub fn function_env(&self, logical_id: &str, r: &Resolver) -> anyhow::Result<BTreeMap<String, String>> {
        let mut env = BTreeMap::new();
        let global = &self.root["Globals"]["Function"]["Environment"]["Variables"];
        let own = &self.root["Resources"][logical_id]["Properties"]["Environment"]["Variables"];
        for vars in [global, own] {
            if let Some(map) = vars.as_mapping() {
                for (k, v) in map {
                    let key = k.as_str().context("variable name")?.to_string();
                    env.insert(key.clone(), resolve(v, r).with_context(|| format!("{logical_id}: variable {key}"))?);
                }
            }
        }
        Ok(env)
    }
}

/// Resolves a value that may be an intrinsic function to a string.
pub fn resolve(v: &Value, r: &Resolver) -> anyhow::Result<String> {
    match v {
        Value::Tagged(t) => {
            let tag = t.tag.to_string();
            match tag.as_str() {
                "!Ref" => {
                    let name = t.value.as_str().context("!Ref takes a name")?;
                    pseudo(name, r)
                        .or_else(|| r.parameters.get(name).cloned())
                        .or_else(|| r.refs.get(name).cloned())
                        .with_context(|| format!("!Ref {name} cannot be resolved locally"))
                }
                "!GetAtt" => {
                    let target = t.value.as_str().context("!GetAtt takes X.Attr")?;
                    let (id, attr) = target.split_once('.').context("!GetAtt takes X.Attr")?;
                    match attr {
                        "Arn" => r.arns.get(id).cloned().with_context(|| format!("no ARN for {id}")),
                        "QueueName" | "QueueUrl" => resolve_ref(id, r),
                        // A topic's name is the last part of its ARN (its `!Ref`).
                        "TopicName" => {
                            resolve_ref(id, r).map(|arn| arn.rsplit(':').next().unwrap_or_default().to_string())
                        }
                        _ => bail!("!GetAtt {target} is not supported locally"),
                    }
                }
                "!Sub" => {
                    let text = t.value.as_str().context("!Sub takes a string")?;
                    substitute(text, r)
                }
                _ => bail!("intrinsic {tag} is not supported locally"),
            }
        }
        other => Ok(scalar(other)),
    }
}

fn resolve_ref(id: &str, r: &Resolver) -> anyhow::Result<String> {
    r.refs.get(id).cloned().with_context(|| format!("{id} is unknown"))
}

fn substitute(text: &str, r: &Resolver) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').context("unclosed ${ in !Sub")? + start;
        let name = &rest[start + 2..end];
        let value = match name.split_once('.') {
            Some((id, "Arn")) => r.arns.get(id).cloned(),
            _ => pseudo(name, r).or_else(|| r.parameters.get(name).cloned()).or_else(|| r.refs.get(name).cloned()),
        };
        out.push_str(&value.with_context(|| format!("${{{name}}} cannot be resolved locally"))?);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn pseudo(name: &str, r: &Resolver) -> Option<String> {
    match name {
        "AWS::StackName" => Some(r.stack_name.to_string()),
        "AWS::Region" => Some(r.region.to_string()),
        "AWS::AccountId" => Some(r.account.to_string()),
        "AWS::Partition" => Some("aws".to_string()),
        _ => None,
    }
}

/// The logical id inside `!GetAtt X.Arn` or `!Ref X`.
pub fn ref_target(v: &Value) -> Option<String> {
    let Value::Tagged(t) = v else { return None };
    let s = t.value.as_str()?;
    Some(s.split('.').next()?.to_string())
}

/// A YAML scalar as CloudFormation would pass it: numbers and booleans as their text.
pub fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => String::new(),
        other => serde_norway::to_string(other).unwrap_or_default().trim().to_string(),
    }
}
