// A real OpenID Connect provider for the single sign-on test: panva's oidc-provider (OpenID
// Certified), with its development log-in and consent pages, which the test drives in headless
// Chromium. Only the accounts and clients come from the test, through the environment:
//   PORT      the loopback port to listen on
//   ISSUER    the issuer it names itself (default http://127.0.0.1:PORT)
//   CLIENTS   JSON array of client metadata (client_id, client_secret, redirect_uris)
//   ACCOUNTS  JSON object: account id -> claims (email, email_verified, name, groups, hd, ...)
// It prints "ready" once it listens.
import Provider from 'oidc-provider';

const { PORT, CLIENTS, ACCOUNTS } = process.env;
const ISSUER = process.env.ISSUER || `http://127.0.0.1:${PORT}`;
const accounts = JSON.parse(ACCOUNTS);
const clients = JSON.parse(CLIENTS).map((c) => ({
  grant_types: ['authorization_code'],
  response_types: ['code'],
  token_endpoint_auth_method: 'client_secret_basic',
  ...c,
}));

const provider = new Provider(ISSUER, {
  clients,
  // Claims go into the ID token as Entra ID and Google put them there, not only behind userinfo.
  conformIdTokenClaims: false,
  claims: {
    openid: ['sub', 'groups', 'hd', '_claim_names', '_claim_sources'],
    email: ['email', 'email_verified'],
    profile: ['name'],
  },
  async findAccount(ctx, id) {
    const claims = accounts[id];
    if (!claims) return undefined;
    return { accountId: id, async claims() { return { sub: id, ...claims }; } };
  },
  cookies: { keys: ['invigilator-sso-test-only'] },
  features: { devInteractions: { enabled: true } },
  pkce: { required: () => true },
});

provider.listen(Number(PORT), '127.0.0.1', () => console.log('ready'));
