#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), hub::entry::Error> {
    hub::entry::run(hub::functions::SPARK_PENDING_SUBMISSIONS).await
}
