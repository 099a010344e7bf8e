//! Evidence files: the type is decided by the bytes (magic numbers), not by what the sender
//! declares, and only an allow-list of images, videos and documents is kept. Files stream into S3
//! in 8 MiB parts, so a 50 MB file never sits whole in a 128 MB Lambda.

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use futures_util::StreamExt;

use crate::domain::learning::BlockType;
use crate::{ApiError, Context};

pub const MAX_FILE_BYTES: u64 = 50 * 1024 * 1024;
/// S3 multipart part size (S3's minimum is 5 MiB).
const PART_BYTES: usize = 8 * 1024 * 1024;
/// Enough of the file to recognise every allowed type.
const SNIFF_BYTES: usize = 4096;

/// What a file's first bytes say it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sniffed {
    pub content_type: &'static str,
    pub block: BlockType,
}

/// The allowed type of a file from its first bytes; `None` for anything else.
pub fn sniff(head: &[u8]) -> Option<Sniffed> {
    let is = |content_type, block| Some(Sniffed { content_type, block });
    let at = |offset: usize, magic: &[u8]| head.get(offset..offset + magic.len()) == Some(magic);
    let contains = |needle: &[u8]| head.windows(needle.len()).any(|w| w == needle);
    if at(0, b"%PDF-") {
        is("application/pdf", BlockType::Document)
    } else if at(0, b"\x89PNG\r\n\x1a\n") {
        is("image/png", BlockType::Image)
    } else if at(0, b"\xFF\xD8\xFF") {
        is("image/jpeg", BlockType::Image)
    } else if at(0, b"GIF87a") || at(0, b"GIF89a") {
        is("image/gif", BlockType::Image)
    } else if at(0, b"RIFF") && at(8, b"WEBP") {
        is("image/webp", BlockType::Image)
    } else if at(0, b"RIFF") && at(8, b"AVI ") {
        is("video/x-msvideo", BlockType::Video)
    } else if at(4, b"ftypqt") {
        is("video/quicktime", BlockType::Video)
    } else if at(4, b"ftyp") {
        is("video/mp4", BlockType::Video)
    } else if at(0, b"PK\x03\x04") && contains(b"word/") {
        is("application/vnd.openxmlformats-officedocument.wordprocessingml.document", BlockType::Document)
    } else if at(0, b"PK\x03\x04") && contains(b"ppt/") {
        is("application/vnd.openxmlformats-officedocument.presentationml.presentation", BlockType::Document)
    } else if at(0, b"PK\x03\x04") && contains(b"xl/") {
        is("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", BlockType::Document)
    } else if at(0, b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1") {
        is("application/msword", BlockType::Document)
    } else if !head.is_empty()
        && head.iter().all(|b| *b >= 0x20 || b"\t\n\r\x0c".contains(b))
        && valid_utf8_prefix(head)
    {
        is("text/plain", BlockType::Document)
    } else {
        None
    }
}

/// UTF-8, allowing a character cut at the end of the sniffed prefix.
fn valid_utf8_prefix(head: &[u8]) -> bool {
    match std::str::from_utf8(head) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none() && head.len() - e.valid_up_to() < 4,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("file larger than {0} bytes")]
    TooLarge(u64),
    #[error("file type not allowed")]
    Unsupported,
    #[error("download failed: {0}")]
    Download(String),
    #[error("storage failed: {0}")]
    Storage(String),
}

impl From<FileError> for ApiError {
    fn from(e: FileError) -> Self {
        match e {
            FileError::TooLarge(max) => ApiError::new(
                http::StatusCode::PAYLOAD_TOO_LARGE,
                "file_too_large",
                format!("A file exceeds {max} bytes"),
            ),
            FileError::Unsupported => ApiError::new(
                http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_file_type",
                "Files must be images (JPEG, PNG, GIF, WebP), videos (MP4, QuickTime, AVI) or documents (PDF, Word, PowerPoint, Excel, text)",
            ),
            FileError::Download(why) => ApiError::new(
                http::StatusCode::BAD_GATEWAY,
                "file_download_failed",
                format!("A file could not be downloaded: {why}"),
            ),
            FileError::Storage(why) => ApiError::unavailable(why),
        }
    }
}

/// Streams a body into `bucket/key`, refusing it past `max` bytes or when its content is not an
/// allowed type. Returns its size and type. Nothing is left in S3 when it fails.
pub async fn stream_to_s3<S, E>(ctx: &Context, key: &str, mut body: S, max: u64) -> Result<(u64, Sniffed), FileError>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut upload = PartUpload { ctx, key, upload_id: None, parts: Vec::new() };
    let result = async {
        let mut buffer: Vec<u8> = Vec::with_capacity(SNIFF_BYTES);
        let mut sniffed = None;
        let mut size = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| FileError::Download(e.to_string()))?;
            size += chunk.len() as u64;
            if size > max {
                return Err(FileError::TooLarge(max));
            }
            buffer.extend_from_slice(&chunk);
            if sniffed.is_none() && buffer.len() >= SNIFF_BYTES {
                sniffed = Some(sniff(&buffer[..SNIFF_BYTES]).ok_or(FileError::Unsupported)?);
            }
            if buffer.len() >= PART_BYTES {
                upload.part(std::mem::take(&mut buffer)).await?;
            }
        }
        let sniffed = match sniffed {
            Some(s) => s,
            None => sniff(&buffer).ok_or(FileError::Unsupported)?,
        };
        upload.finish(buffer, sniffed.content_type).await?;
        Ok((size, sniffed))
    }
    .await;
    if result.is_err() {
        upload.abort().await;
    }
    result
}

/// A file going to S3: one `PutObject` when small, a multipart upload when not.
struct PartUpload<'a> {
    ctx: &'a Context,
    key: &'a str,
    upload_id: Option<String>,
    parts: Vec<CompletedPart>,
}

impl PartUpload<'_> {
    fn bucket(&self) -> &str {
        &self.ctx.config.evidence_bucket
    }

    async fn part(&mut self, bytes: Vec<u8>) -> Result<(), FileError> {
        let s3 = self.ctx.s3();
        let storage = |e: &dyn std::fmt::Display| FileError::Storage(e.to_string());
        if self.upload_id.is_none() {
            let created = s3
                .create_multipart_upload()
                .bucket(self.bucket())
                .key(self.key)
                .send()
                .await
                .map_err(|e| storage(&e))?;
            self.upload_id = created.upload_id;
        }
        let number = self.parts.len() as i32 + 1;
        let out = s3
            .upload_part()
            .bucket(self.bucket())
            .key(self.key)
            .upload_id(self.upload_id.as_deref().unwrap_or_default())
            .part_number(number)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| storage(&e))?;
        self.parts.push(CompletedPart::builder().part_number(number).set_e_tag(out.e_tag).build());
        Ok(())
    }

    async fn finish(&mut self, rest: Vec<u8>, content_type: &str) -> Result<(), FileError> {
        let s3 = self.ctx.s3();
        let storage = |e: &dyn std::fmt::Display| FileError::Storage(e.to_string());
        if self.upload_id.is_none() {
            s3.put_object()
                .bucket(self.bucket())
                .key(self.key)
                .content_type(content_type)
                .body(ByteStream::from(rest))
                .send()
                .await
                .map_err(|e| storage(&e))?;
            return Ok(());
        }
        if !rest.is_empty() {
            self.part(rest).await?;
        }
        let parts = CompletedMultipartUpload::builder().set_parts(Some(std::mem::take(&mut self.parts))).build();
        s3.complete_multipart_upload()
            .bucket(self.bucket())
            .key(self.key)
            .upload_id(self.upload_id.take().unwrap_or_default())
            .multipart_upload(parts)
            .send()
            .await
            .map_err(|e| storage(&e))?;
        Ok(())
    }

    async fn abort(&mut self) {
        if let Some(id) = self.upload_id.take() {
            let _ =
                self.ctx.s3().abort_multipart_upload().bucket(self.bucket()).key(self.key).upload_id(id).send().await;
        }
    }
}

/// Removes stored files (when the change they belonged to did not happen).
pub async fn delete(ctx: &Context, keys: &[String]) {
    for key in keys {
        if let Err(e) = ctx.s3().delete_object().bucket(&ctx.config.evidence_bucket).key(key).send().await {
            tracing::warn!(key, error = %aws_sdk_s3::error::DisplayErrorContext(&e), "could not delete an orphaned file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_come_from_the_bytes() {
        assert_eq!(sniff(b"%PDF-1.7\n...").unwrap().content_type, "application/pdf");
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n....").unwrap().block, BlockType::Image);
        assert_eq!(sniff(b"\xFF\xD8\xFF\xE0..JFIF").unwrap().content_type, "image/jpeg");
        assert_eq!(sniff(b"\x00\x00\x00\x18ftypmp42....").unwrap().block, BlockType::Video);
        assert_eq!(
            sniff(b"PK\x03\x04....[Content_Types].xml....word/document.xml").unwrap().block,
            BlockType::Document
        );
        assert_eq!(sniff("A reflection, in plain text. é".as_bytes()).unwrap().content_type, "text/plain");
    }

    #[test]
    fn everything_else_is_refused() {
        assert_eq!(sniff(b"MZ\x90\x00\x03\x00\x00\x00"), None, "a Windows executable");
        assert_eq!(sniff(b"\x7fELF\x02\x01\x01\x00"), None, "an ELF binary");
        assert_eq!(sniff(b"PK\x03\x04 arbitrary zip"), None);
        assert_eq!(sniff(b""), None);
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_sniff_without_panicking(head in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4096)) {
            let _ = sniff(&head);
        }
    }
}
