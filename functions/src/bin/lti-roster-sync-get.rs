#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), hub::entry::Error> {
    hub::entry::run(hub::functions::LTI_ROSTER_SYNC_GET).await
}
