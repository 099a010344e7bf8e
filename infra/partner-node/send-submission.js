// Spark's webhook submission, as in its integration code (seed 000), unchanged but for where the
// inputs come from. Prints {"status", "body"} of our answer.
// Usage: OPTIO_WEBHOOK_SECRET=... node send-submission.js URL '{"userId":..,"assignmentId":..,"courseId":..,"text":..,"files":[{"url","mimeType","name"}],"grade":..}'
const crypto = require('crypto');

async function main() {
  const [endpoint, submissionJson] = process.argv.slice(2);
  const submission = JSON.parse(submissionJson);
  submission.files = (submission.files || []).map(f => ({ ...f, getTemporaryUrl: () => f.url }));

  const payload = {
    spark_user_id: submission.userId,
    spark_assignment_id: submission.assignmentId,
    spark_course_id: submission.courseId,
    submission_text: submission.text,
    submission_files: submission.files.map(f => ({
      url: f.getTemporaryUrl(86400),  // 24-hour expiry
      type: f.mimeType,
      filename: f.name
    })),
    submitted_at: new Date().toISOString(),
    grade: submission.grade
  };

  const signature = crypto
    .createHmac('sha256', process.env.OPTIO_WEBHOOK_SECRET)
    .update(JSON.stringify(payload))
    .digest('hex');

  const res = await fetch(endpoint, {
    method: 'POST',
    headers: {
      'Content-Type': 'application/json',
      'X-Spark-Signature': signature
    },
    body: JSON.stringify(payload)
  });
  console.log(JSON.stringify({ status: res.status, body: await res.json() }));
}

main().catch(e => { console.error(e); process.exit(1); });
