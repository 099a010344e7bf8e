//! A loopback proxy in front of DynamoDB Local that throttles `BatchWriteItem`s the way DynamoDB does,
//! for the roster writer's tests: DynamoDB Local never throttles. Each throttled request consumes one
//! planned answer: a partial throttle (`200` with every item echoed back as `UnprocessedItems`) or a
//! refusal (`400 ProvisionedThroughputExceededException`, which the SDK retries itself first).
//! Everything else is forwarded unchanged.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

#[derive(Clone, Copy, Debug)]
pub enum Throttle {
    Unprocessed,
    Exception,
}

pub struct ThrottlingDynamo {
    pub url: String,
    plan: Arc<Mutex<VecDeque<Throttle>>>,
    forever: Arc<Mutex<Option<Throttle>>>,
    pub throttled: Arc<Mutex<usize>>,
}

impl ThrottlingDynamo {
    pub async fn start() -> Self {
        let upstream = std::env::var("AWS_ENDPOINT_URL_DYNAMODB").expect("DynamoDB Local's endpoint");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = Self {
            url: format!("http://{}", listener.local_addr().unwrap()),
            plan: Default::default(),
            forever: Default::default(),
            throttled: Default::default(),
        };
        let (plan, forever, throttled) = (proxy.plan.clone(), proxy.forever.clone(), proxy.throttled.clone());
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (plan, forever, throttled, http, upstream) =
                    (plan.clone(), forever.clone(), throttled.clone(), http.clone(), upstream.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let (plan, forever, throttled, http, upstream) =
                            (plan.clone(), forever.clone(), throttled.clone(), http.clone(), upstream.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            let target = parts.headers.get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or("");
                            let planned = if target.ends_with(".BatchWriteItem") {
                                plan.lock().unwrap().pop_front().or(*forever.lock().unwrap())
                            } else {
                                None
                            };
                            if let Some(kind) = planned {
                                *throttled.lock().unwrap() += 1;
                                return Ok::<_, std::convert::Infallible>(throttle(kind, &body));
                            }
                            let mut forward = http.request(parts.method.clone(), format!("{upstream}{}", parts.uri));
                            for (name, value) in &parts.headers {
                                if name != http::header::HOST && name != http::header::CONTENT_LENGTH {
                                    forward = forward.header(name, value);
                                }
                            }
                            let answer = forward.body(body).send().await.unwrap();
                            let mut response = hyper::Response::builder().status(answer.status().as_u16());
                            for (name, value) in answer.headers() {
                                if name != http::header::CONTENT_LENGTH && name != http::header::TRANSFER_ENCODING {
                                    response = response.header(name, value);
                                }
                            }
                            Ok(response.body(Full::new(answer.bytes().await.unwrap_or_default())).unwrap())
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        proxy
    }

    /// The next `BatchWriteItem`s answer these, one each.
    pub fn plan(&self, answers: impl IntoIterator<Item = Throttle>) {
        self.plan.lock().unwrap().extend(answers);
    }

    /// Every `BatchWriteItem` after the plan answers this (`None`: forwarded).
    pub fn always(&self, answer: Option<Throttle>) {
        *self.forever.lock().unwrap() = answer;
    }

    /// A DynamoDB client that goes through the proxy.
    pub fn client(&self, sdk: &aws_config::SdkConfig) -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(sdk).endpoint_url(&self.url).build(),
        )
    }
}

fn throttle(kind: Throttle, body: &Bytes) -> hyper::Response<Full<Bytes>> {
    let (status, answer) = match kind {
        Throttle::Unprocessed => {
            let request: Value = serde_json::from_slice(body).unwrap_or_default();
            (200, json!({"UnprocessedItems": request["RequestItems"]}))
        }
        Throttle::Exception => (
            400,
            json!({"__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
                   "message": "The level of configured provisioned throughput for the table was exceeded."}),
        ),
    };
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/x-amz-json-1.0")
        .body(Full::new(Bytes::from(answer.to_string())))
        .unwrap()
}
