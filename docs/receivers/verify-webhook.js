// Verifying Optio webhook deliveries in Node, with no dependency (node:crypto only).
// Always verify the raw request body, byte for byte, before parsing it.
//   const { verifyDelivery } = require('./verify-webhook');
//   app.post('/hooks/optio', express.raw({ type: 'application/json' }), (req, res) => {
//     if (!verifyDelivery(req.body, req.headers, process.env.OPTIO_WEBHOOK_SECRET)) return res.sendStatus(401);
//     ... deduplicate on req.headers['x-optio-delivery'], then answer 2xx quickly ...
//   });
'use strict';
const crypto = require('node:crypto');

function safeEqual(a, b) {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && crypto.timingSafeEqual(x, y);
}

/** X-Optio-Signature: "sha256=" + hex HMAC-SHA256 of the raw body, keyed with the whole secret string.
 *  During the 24 hours after a rotation, X-Optio-Signature-Previous carries the old secret's signature. */
function verifyOptioSignature(rawBody, headers, secret) {
  const expected = 'sha256=' + crypto.createHmac('sha256', secret).update(rawBody).digest('hex');
  return ['x-optio-signature', 'x-optio-signature-previous'].some(
    (name) => typeof headers[name] === 'string' && safeEqual(headers[name], expected),
  );
}

/** Standard Webhooks: "v1,<base64 HMAC-SHA256 of `${webhook-id}.${webhook-timestamp}.${body}`>", keyed with
 *  the base64-decoded part of the secret after "whsec_"; several signatures are separated by spaces.
 *  The timestamp must be within `toleranceSeconds` of now (replay protection). */
function verifyStandardWebhook(rawBody, headers, secret, toleranceSeconds = 300, nowSeconds = Date.now() / 1000) {
  const id = headers['webhook-id'];
  const timestamp = headers['webhook-timestamp'];
  const signatures = headers['webhook-signature'];
  if (!id || !timestamp || !signatures || !/^\d+$/.test(timestamp)) return false;
  if (Math.abs(nowSeconds - Number(timestamp)) > toleranceSeconds) return false;
  const key = Buffer.from(secret.replace(/^whsec_/, ''), 'base64');
  const expected = crypto.createHmac('sha256', key).update(`${id}.${timestamp}.`).update(rawBody).digest('base64');
  return signatures.split(' ').some((entry) => {
    const [version, signature] = entry.split(',');
    return version === 'v1' && typeof signature === 'string' && safeEqual(signature, expected);
  });
}

/** Either scheme is enough; checking one is fine. */
function verifyDelivery(rawBody, headers, secret) {
  return verifyStandardWebhook(rawBody, headers, secret) || verifyOptioSignature(rawBody, headers, secret);
}

module.exports = { verifyOptioSignature, verifyStandardWebhook, verifyDelivery };

// `node verify-webhook.js < request.json` with {"body_base64", "headers", "secret"}: prints what verifies.
if (require.main === module) {
  let input = '';
  process.stdin.on('data', (chunk) => (input += chunk));
  process.stdin.on('end', () => {
    const { body_base64: body, headers, secret } = JSON.parse(input);
    const raw = Buffer.from(body, 'base64');
    console.log(JSON.stringify({
      optio: verifyOptioSignature(raw, headers, secret),
      standard: verifyStandardWebhook(raw, headers, secret),
    }));
  });
}
