// Reference "plain OAuth 2.0 server" built on panva/oidc-provider, for benchmarks and black-box tests that
// compare our hub with a well-known implementation. It is a TEST DOUBLE: every authorization request is
// logged in as `alice` and consented automatically (see /interaction/:uid below). Never expose it.
//
//   npm ci --prefix infra/oidc-provider && PORT=4700 node infra/oidc-provider/server.mjs
//
// Prints exactly one line `listening http://127.0.0.1:<PORT>` on stdout once it accepts connections.
// Env: PORT (default 4700), CLIENTS (inline JSON array or path to a JSON file with an array of
// oidc-provider client metadata), JWT_RESOURCE (resource indicator that yields JWT access tokens,
// default urn:spark:hub-api), DEBUG_OIDC=1 to keep the library's notices/warnings.

import * as crypto from 'node:crypto';
import { readFileSync } from 'node:fs';

// oidc-provider prints "NOTICE"/"WARNING" lines about quick-start defaults (memory adapter, runtime
// version) through console.info/console.warn. They are expected for a loopback test double, so they are
// dropped unless DEBUG_OIDC is set. Real errors still go to stderr (see the `server_error` hook below).
if (!process.env.DEBUG_OIDC) {
  for (const level of ['info', 'warn']) {
    const original = console[level].bind(console);
    console[level] = (first, ...rest) => {
      if (typeof first === 'string' && first.includes('oidc-provider ')) return;
      original(first, ...rest);
    };
  }
}

const { default: Provider } = await import('oidc-provider');

const PORT = Number.parseInt(process.env.PORT ?? '4700', 10);
const HOST = '127.0.0.1';
const ISSUER = `http://${HOST}:${PORT}`;

// Our scopes (docs/oauth.md §2). `openid` and `offline_access` are always known to oidc-provider.
const SCOPES = ['profile', 'progress:read', 'quests:read', 'webhooks:manage'];
const SCOPE = SCOPES.join(' ');

// Optional resource indicator: a token request (or authorization request) with `resource=<JWT_RESOURCE>`
// gets an RFC 9068 JWT access token (typ at+jwt, EdDSA, aud = the indicator) instead of an opaque one.
// Note that oidc-provider refuses to introspect JWT access tokens; opaque is the default.
const JWT_RESOURCE = process.env.JWT_RESOURCE ?? 'urn:spark:hub-api';

const REDIRECT_URI = 'http://127.0.0.1:9/callback';
const DEFAULT_CLIENTS = [
  {
    client_id: 'bench-client',
    client_secret: 'bench-secret',
    grant_types: ['client_credentials', 'authorization_code', 'refresh_token'],
    response_types: ['code'],
    redirect_uris: [REDIRECT_URI],
    token_endpoint_auth_method: 'client_secret_basic',
    scope: SCOPE,
  },
  {
    client_id: 'bench-public',
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    redirect_uris: [REDIRECT_URI],
    token_endpoint_auth_method: 'none',
    scope: SCOPE,
  },
];

function loadClients() {
  const raw = process.env.CLIENTS;
  if (!raw) return DEFAULT_CLIENTS;
  const text = raw.trimStart().startsWith('[') ? raw : readFileSync(raw, 'utf8');
  const clients = JSON.parse(text);
  if (!Array.isArray(clients)) throw new TypeError('CLIENTS must be a JSON array of client metadata');
  return clients;
}

function ephemeralJwk(type, options, kid) {
  const { privateKey } = crypto.generateKeyPairSync(type, options);
  return { ...privateKey.export({ format: 'jwk' }), kid, use: 'sig' };
}

const configuration = {
  clients: loadClients(),
  scopes: ['openid', 'offline_access', ...SCOPES],
  responseTypes: ['code'],
  clientAuthMethods: ['client_secret_basic', 'client_secret_post', 'none'],

  // Fresh keys and cookie secret per process (no dev keys): RS256 for ID tokens if `openid` is asked
  // for, Ed25519 for JWT access tokens.
  jwks: {
    keys: [
      ephemeralJwk('rsa', { modulusLength: 2048 }, 'rs256'),
      ephemeralJwk('ed25519', {}, 'eddsa'),
    ],
  },
  cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },

  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    userinfo: { enabled: false },
    introspection: {
      enabled: true,
      // As ours: confidential clients, about their own tokens only (anything else is {"active": false}).
      allowedPolicy: async (ctx, client, token) => client.clientAuthMethod !== 'none' && token.clientId === client.clientId,
    },
    revocation: {
      enabled: true,
      // As ours (RFC 7009 §2.1): only the client a token was issued to may revoke it; another's request
      // is refused with invalid_request (the library's default for confidential clients, for all here).
      allowedPolicy: async (ctx, client, token) => {
        if (token.clientId !== client.clientId) {
          throw new Provider.errors.InvalidRequest('client is not authorized to revoke the presented token');
        }
        return true;
      },
    },
    resourceIndicators: {
      enabled: true,
      // No `resource` parameter => no resource server => opaque access token carrying the granted scopes.
      defaultResource: async () => undefined,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (ctx, resourceIndicator) => {
        if (resourceIndicator !== JWT_RESOURCE) throw new Provider.errors.InvalidTarget();
        return {
          scope: SCOPE,
          audience: JWT_RESOURCE,
          accessTokenTTL: 3600,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'EdDSA' } },
        };
      },
    },
  },

  // PKCE on every authorization request; oidc-provider 9 supports only S256 (plain is refused), so
  // there is no `methods` option any more.
  pkce: { required: () => true },

  // Refresh tokens for every authorization_code grant of a client allowed to use refresh_token (no need
  // for `offline_access` + `prompt=consent`), rotated on every use; re-using a rotated one revokes the grant.
  issueRefreshToken: async (ctx, client, code) => client.grantTypeAllowed('refresh_token')
    && ['AuthorizationCode', 'RefreshToken'].includes(code.kind),
  rotateRefreshToken: true,
  // As ours: revoking any token (access or refresh) revokes its whole grant.
  revokeGrantPolicy: () => true,

  ttl: {
    AccessToken: 3600,
    ClientCredentials: 3600,
    AuthorizationCode: 60,
    IdToken: 3600,
    RefreshToken: 30 * 24 * 3600,
    Interaction: 3600,
    Session: 14 * 24 * 3600,
    Grant: 30 * 24 * 3600,
  },

  // Any account id exists (test double).
  findAccount: async (ctx, sub) => ({
    accountId: sub,
    claims: async () => ({ sub, name: sub, email: `${sub}@example.test` }),
  }),

  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },

  clientBasedCORS: () => false,
  renderError: async (ctx, out) => {
    ctx.type = 'application/json; charset=utf-8';
    ctx.body = out;
  },
};

const provider = new Provider(ISSUER, configuration);
provider.proxy = false;

provider.on('server_error', (ctx, err) => console.error('server_error', err));

// TEST DOUBLE ONLY: automatic login and consent. Any authorization request that reaches an interaction
// is completed without a user: the `login` prompt logs in as `alice`, the `consent` prompt grants
// everything that is missing (scopes and resource scopes). A client following redirects with a cookie
// jar therefore ends at redirect_uri?code=...&state=...&iss=... . There is no "deny" path.
const AUTO_ACCOUNT = 'alice';
provider.use(async (ctx, next) => {
  const match = /^\/interaction\/([\w-]+)$/.exec(ctx.path);
  if (!match || ctx.method !== 'GET') return next();

  const details = await provider.interactionDetails(ctx.req, ctx.res);
  const { prompt, params, session } = details;
  let result;
  if (prompt.name === 'login') {
    result = { login: { accountId: AUTO_ACCOUNT } };
  } else if (prompt.name === 'consent') {
    const accountId = session?.accountId ?? AUTO_ACCOUNT;
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId, clientId: params.client_id });
    const missing = prompt.details;
    if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
    if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    result = { consent: { grantId: await grant.save() } };
  } else {
    result = { error: 'access_denied', error_description: `unsupported prompt ${prompt.name}` };
  }

  const returnTo = await provider.interactionResult(ctx.req, ctx.res, result, { mergeWithLastSubmission: true });
  ctx.status = 303;
  ctx.redirect(returnTo);
});

const server = provider.listen(PORT, HOST, () => {
  console.log(`listening ${ISSUER}`);
});

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    server.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 1000).unref();
  });
}
