// The seed story (issue #7) in a real browser: Debian's Chromium, driven by playwright-core,
// against the running demo (the operator, two gateway replicas following it behind one load
// balancer, Dex, two sample apps, a real API server). Run by `tests/tests/browser.rs`, which starts the demo with short
// token lifetimes; it also runs against a demo started by hand (see docs/quickstart.md).
//
// Chromium trusts the demo CA through a fresh NSS database in a temporary HOME (never
// --ignore-certificate-errors), and resolves the demo host names to 127.0.0.1 with
// --host-resolver-rules. Revocations are real `kubectl patch` calls on the AccessSession and
// AccessPolicy objects.
//
// Environment (the defaults fit `hack/demo.sh` after `eval "$(target/debug/devstack env --state-dir target/demo)"`):
//   PORTCULLIS_E2E_APPS_ORIGIN     https://apps.portcullis.localhost:PORT (app one /wordpress, app two /express)
//   PORTCULLIS_E2E_EXPRESS_ORIGIN  https://express.portcullis.localhost:PORT (the other host)
//   PORTCULLIS_E2E_AUTH_ORIGIN     https://auth.portcullis.localhost:PORT
//                                  (PORT: PORTCULLIS_DEMO_PORT, else 8443)
//   PORTCULLIS_E2E_DEX_ISSUER      Dex's issuer URL (default: PORTCULLIS_DEX_ISSUER)
//   PORTCULLIS_E2E_CA_FILE         the CA every demo certificate chains to (default: PORTCULLIS_CA_FILE)
//   KUBECONFIG                     admin kubeconfig of the demo's cluster
//   PORTCULLIS_E2E_ARTIFACTS       directory for screenshots (default: target/seed-story)
//   PORTCULLIS_E2E_KUBECTL         kubectl binary (default: kubectl on PATH)
//   PORTCULLIS_E2E_NAMESPACE       namespace of the demo policies and sessions (default: default)
//   PORTCULLIS_E2E_POLICY          the AccessPolicy of the apps origin (default: apps)
//   PORTCULLIS_E2E_HOST_RULES      Chromium's --host-resolver-rules (default: every host of the
//                                  three origins to 127.0.0.1); an install behind an ingress maps
//                                  them and Dex's host to the ingress's and Dex's addresses
//   PORTCULLIS_E2E_USER, _PASSWORD login at Dex (default: alice@example.com / password)
//   PORTCULLIS_E2E_CHROMIUM        browser binary (default: /usr/bin/chromium)
//
// Token lifetime and idle timeout are read from that AccessPolicy in the cluster.
// Exit status 0 when every step passed; 1 with a summary naming each failed step otherwise.

import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const started = Date.now();
const log = (...args) =>
  console.log(`[+${((Date.now() - started) / 1000).toFixed(1).padStart(6)}s]`, ...args);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function env(name, fallback) {
  const value = process.env[name];
  if (value !== undefined && value !== '') return value;
  if (fallback !== undefined && fallback !== '') return fallback;
  console.error(`seed-story: ${name} is not set (see the top of e2e/seed-story.mjs)`);
  process.exit(2);
}

const port = env('PORTCULLIS_DEMO_PORT', '8443');
const apps = env('PORTCULLIS_E2E_APPS_ORIGIN', `https://apps.portcullis.localhost:${port}`);
const express = env('PORTCULLIS_E2E_EXPRESS_ORIGIN', `https://express.portcullis.localhost:${port}`);
const auth = env('PORTCULLIS_E2E_AUTH_ORIGIN', `https://auth.portcullis.localhost:${port}`);
const dexIssuer = new URL(env('PORTCULLIS_E2E_DEX_ISSUER', process.env.PORTCULLIS_DEX_ISSUER));
const caFile = env('PORTCULLIS_E2E_CA_FILE', process.env.PORTCULLIS_CA_FILE);
const kubeconfig = env('KUBECONFIG');
const artifacts = env(
  'PORTCULLIS_E2E_ARTIFACTS',
  fileURLToPath(new URL('../target/seed-story', import.meta.url)),
);
const kubectlBin = env('PORTCULLIS_E2E_KUBECTL', 'kubectl');
const namespace = env('PORTCULLIS_E2E_NAMESPACE', 'default');
const policyName = env('PORTCULLIS_E2E_POLICY', 'apps');
const user = env('PORTCULLIS_E2E_USER', 'alice@example.com');
const password = env('PORTCULLIS_E2E_PASSWORD', 'password');
const chromiumBin = env('PORTCULLIS_E2E_CHROMIUM', '/usr/bin/chromium');

const appOne = `${apps}/wordpress/`;
const appTwo = `${apps}/express/`;
const otherHost = `${express}/`;
const pollUrl = `${apps}/wordpress/poll`;
const APP_COOKIE = /^__Host-portcullis-app-/;
/// The sample app's poll page calls its API this often.
const POLL_SECONDS = 3;

mkdirSync(artifacts, { recursive: true });
const screenshots = [];

// ---------------------------------------------------------------------------------------------
// kubectl: every revocation goes through the API server, as an operator would do it.

function kubectl(...args) {
  log(`$ kubectl -n ${namespace} ${args.join(' ')}`);
  try {
    return execFileSync(kubectlBin, ['-n', namespace, ...args], {
      env: { ...process.env, KUBECONFIG: kubeconfig },
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    });
  } catch (error) {
    throw new Error(`kubectl ${args.join(' ')} failed: ${error.stderr || error.message}`);
  }
}

const kubectlJson = (...args) => JSON.parse(kubectl(...args, '-o', 'json'));

/// Seconds in a Kubernetes/Go duration such as `10s`, `1m`, `1h30m0s`.
function seconds(duration) {
  const units = { ms: 0.001, s: 1, m: 60, h: 3600 };
  let total = 0;
  const rest = String(duration).replace(/(\d+(?:\.\d+)?)(ms|s|m|h)/g, (_, n, unit) => {
    total += Number(n) * units[unit];
    return '';
  });
  if (rest !== '' || total <= 0) throw new Error(`cannot read the duration ${JSON.stringify(duration)}`);
  return total;
}

// ---------------------------------------------------------------------------------------------
// Assertions and pages.

class StepFailure extends Error {}
function check(condition, message) {
  if (!condition) throw new StepFailure(message);
}

async function shot(page, name) {
  const file = join(artifacts, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  screenshots.push(file);
  log(`screenshot ${file}`);
}

const onDex = (url) => {
  const u = new URL(url);
  return u.origin === dexIssuer.origin && u.pathname.startsWith(`${dexIssuer.pathname}/auth`);
};
const onApp = (url, origin) => {
  const u = new URL(url);
  return u.origin === origin && !u.pathname.startsWith('/.portcullis/');
};

/// Navigates and returns the URL the browser ends on (after every redirect).
async function open(page, url) {
  const response = await page.goto(url, { waitUntil: 'load' });
  check(response !== null, `no response for ${url}`);
  return page.url();
}

/// The last OIDC authorization request the browser sent to Dex, as a URL: Dex's login page may
/// be a redirect away from it (with one connector, Dex goes straight to its form).
function lastAuthorization(ctx) {
  const url = [...ctx.dexRequests].reverse().find((u) => new URL(u).searchParams.get('client_id') !== null);
  return url === undefined ? null : new URL(url);
}

/// Whether the last authorization request asked Dex to authenticate the user again.
function reauthenticationAsked(ctx) {
  const authorization = lastAuthorization(ctx);
  return authorization !== null && authorization.searchParams.get('prompt') === 'login';
}

/// Fails unless the page is Dex's login page (connector choice or password form).
async function expectLoginPage(page, what) {
  check(
    onDex(page.url()),
    `${what}: expected Dex's login page, the browser is on ${page.url()} showing:\n${(await page.innerText('body')).slice(0, 400)}`,
  );
  const text = await page.innerText('body');
  check(/log in/i.test(text), `${what}: ${page.url()} does not look like Dex's login page:\n${text.slice(0, 400)}`);
}

/// On Dex's login page: picks the password connector, fills in the form, submits, and waits
/// until the browser is back on an app. Takes a screenshot of the form when `screenshot`.
async function logIn(page, screenshot) {
  await expectLoginPage(page, 'log in');
  if ((await page.locator('input[name="password"]').count()) === 0) {
    await Promise.all([
      page.waitForURL((u) => u.pathname.includes('/auth/local'), { waitUntil: 'load' }),
      page.locator('a[href*="/auth/local"]').first().click(),
    ]);
  }
  if (screenshot) await shot(page, screenshot);
  await page.fill('input[name="login"]', user);
  await page.fill('input[name="password"]', password);
  await Promise.all([
    page.waitForURL((u) => u.origin !== dexIssuer.origin && !u.pathname.startsWith('/.portcullis/'), {
      waitUntil: 'load',
      timeout: 30_000,
    }),
    page.locator('button[type="submit"]').first().click(),
  ]);
}

/// What the sample app's identity page shows.
async function identity(page) {
  const text = await page.innerText('body');
  return {
    user: (await page.locator('#user').innerText()).trim(),
    email: (await page.locator('#email').innerText()).trim(),
    verified: text.includes('assertion verified'),
    text,
  };
}

async function expectIdentity(page, origin, what) {
  check(onApp(page.url(), origin), `${what}: expected the app on ${origin}, the browser is on ${page.url()}`);
  const who = await identity(page);
  check(who.email === user, `${what}: the app shows ${JSON.stringify(who.email)}, not ${user}:\n${who.text.slice(0, 400)}`);
  check(who.user !== '' && who.user !== '(none)', `${what}: no X-Auth-Request-User on the page`);
  check(who.verified, `${what}: the app did not verify the gateway's assertion:\n${who.text.slice(0, 600)}`);
  return who;
}

/// The app-token cookies the browser holds for `origin`.
async function appCookies(context, origin) {
  return (await context.cookies(origin)).filter((c) => APP_COOKIE.test(c.name));
}

function jwtClaims(token) {
  const part = token.split('.')[1];
  return JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
}

/// `fetch` from inside the page, as the app's own script would.
function pageFetch(page, path) {
  return page.evaluate(async (p) => {
    const r = await fetch(p, { headers: { Accept: 'application/json' }, cache: 'no-store', redirect: 'manual' });
    let body = null;
    try {
      body = await r.json();
    } catch {
      body = null;
    }
    return { status: r.status, type: r.type, contentType: r.headers.get('content-type'), body };
  }, path);
}

// ---------------------------------------------------------------------------------------------
// The browser.

/// A fresh NSS database in a temporary HOME that trusts the demo CA: how Chromium on Linux
/// learns about a private CA.
function trustingHome() {
  const home = mkdtempSync(join(tmpdir(), 'portcullis-e2e-home-'));
  const nssdb = join(home, '.pki', 'nssdb');
  mkdirSync(nssdb, { recursive: true });
  execFileSync('certutil', ['-d', `sql:${nssdb}`, '-N', '--empty-password'], { stdio: 'pipe' });
  execFileSync('certutil', ['-d', `sql:${nssdb}`, '-A', '-t', 'C,,', '-n', 'portcullis-test-ca', '-i', caFile], {
    stdio: 'pipe',
  });
  return home;
}

async function launch(home) {
  const hosts = [apps, express, auth].map((o) => new URL(o).hostname);
  const rules = env('PORTCULLIS_E2E_HOST_RULES', hosts.map((h) => `MAP ${h} 127.0.0.1`).join(', '));
  const args = [
    `--host-resolver-rules=${rules}`,
    // This machine's network is closed: no background connections Chromium would make on its
    // own (they are refused, many at a time, and slow every start).
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--disable-quic',
    '--no-first-run',
    '--disable-gpu',
  ];
  // Chromium's sandbox refuses to run as root (CI runs as root).
  if (process.getuid && process.getuid() === 0) args.push('--no-sandbox');
  return chromium.launch({
    executablePath: chromiumBin,
    headless: true,
    args,
    env: { ...process.env, HOME: home },
  });
}

// ---------------------------------------------------------------------------------------------
// The story.

const results = [];
const state = {};

/// A context whose navigations and Dex visits the steps can inspect.
async function newContext(browser) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 800 } });
  context.dexRequests = [];
  context.on('request', (request) => {
    if (new URL(request.url()).origin === dexIssuer.origin) context.dexRequests.push(request.url());
  });
  return context;
}

async function step1(ctx) {
  const page = await ctx.newPage();
  state.page = page;
  const landed = await open(page, appOne);
  await expectLoginPage(page, `opening ${appOne} without a session`);
  // Dex shows its only connector's form at once (a redirect from the authorization request):
  // the request that reached it must have been an OIDC authorization request.
  check(
    lastAuthorization(ctx) !== null,
    `no authorization request reached Dex before its login page ${landed}: ${ctx.dexRequests.join(', ')}`,
  );
  await shot(page, '01a-dex-login');
  await logIn(page, '01b-dex-login');
  check(page.url() === appOne, `after the login the browser is on ${page.url()}, not ${appOne}`);
  const who = await expectIdentity(page, apps, 'app one after the login');
  state.subject = who.user;
  await shot(page, '01c-app-one-identity');
  log(`app one shows ${who.email} (subject ${who.user})`);
}

async function step2(ctx) {
  const page = state.page;
  for (const [url, origin, name] of [
    [appTwo, apps, '02a-app-two-other-path'],
    [otherHost, express, '02b-app-two-other-host'],
  ]) {
    const before = ctx.dexRequests.length;
    const landed = await open(page, url);
    check(landed === url, `${url} ended on ${landed}`);
    check(ctx.dexRequests.length === before, `${url} went through Dex: ${ctx.dexRequests.slice(before).join(', ')}`);
    const who = await expectIdentity(page, origin, url);
    check(who.user === state.subject, `${url} shows subject ${who.user}, app one showed ${state.subject}`);
    await shot(page, name);
    log(`${url}: same user, no login page`);
  }
}

async function step3(ctx) {
  const page = await ctx.newPage();
  state.poll = page;
  const navigations = [];
  const errors = [];
  page.on('framenavigated', (frame) => {
    if (frame === page.mainFrame()) navigations.push(frame.url());
  });
  page.on('pageerror', (error) => errors.push(`page error: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error') errors.push(`console: ${message.text()}`);
  });
  state.pollNavigations = navigations;
  await open(page, pollUrl);
  check(page.url() === pollUrl, `the poll page ended on ${page.url()}`);
  navigations.length = 0;
  errors.length = 0;

  const lifetime = state.tokenLifetime;
  const duration = Math.max(3.5 * lifetime, 30);
  log(`polling for ${duration}s (token lifetime ${lifetime}s, a call every ${POLL_SECONDS}s)`);
  const tokens = new Map();
  const counts = [];
  const deadline = Date.now() + duration * 1000;
  let lastOkAt = 0;
  while (Date.now() < deadline) {
    await sleep(1000);
    const status = (await page.locator('#status').innerText()).trim();
    const count = Number((await page.locator('#count').innerText()).trim());
    const last = (await page.locator('#last').innerText()).trim();
    check(status === 'ok' || (status === 'starting' && count === 0), `the poll page says ${status}: ${last}`);
    if (counts.length === 0 || count !== counts[counts.length - 1]) {
      counts.push(count);
      lastOkAt = Date.now() / 1000;
    }
    for (const cookie of await appCookies(ctx, apps)) {
      if (!tokens.has(cookie.value)) tokens.set(cookie.value, jwtClaims(cookie.value));
    }
  }
  const email = (await page.locator('#email').innerText()).trim();
  check(email === user, `the poll page shows ${JSON.stringify(email)}`);
  check(navigations.length === 0, `the poll page navigated: ${navigations.join(', ')}`);
  check(errors.length === 0, `errors on the poll page:\n${errors.join('\n')}`);
  const final = counts[counts.length - 1];
  const expected = Math.floor(duration / POLL_SECONDS) - 2;
  check(final >= expected, `only ${final} successful calls in ${duration}s (expected at least ${expected})`);
  const claims = [...tokens.values()].sort((a, b) => a.iat - b.iat);
  check(claims.length >= 3, `the app token was renewed only ${claims.length - 1} times in ${duration}s`);
  const firstExpiry = claims[0].exp;
  check(
    lastOkAt > firstExpiry + lifetime,
    `the last successful call (${lastOkAt.toFixed(0)}) is not more than a token lifetime after the first token expired (${firstExpiry})`,
  );
  check(
    claims.every((c) => c.sid === claims[0].sid),
    `the renewed tokens belong to different sessions: ${claims.map((c) => c.sid).join(', ')}`,
  );
  state.sid = claims[0].sid;
  await shot(page, '03-poll-across-token-lifetimes');
  log(`${final} calls, ${claims.length} app tokens (exp ${claims.map((c) => c.exp).join(', ')}), no navigation, no error`);
}

async function step4(ctx) {
  const poll = state.poll;
  const session = await pageFetch(poll, '/.portcullis/session?path=/wordpress');
  check(session.status === 200, `/.portcullis/session answered ${session.status}: ${JSON.stringify(session.body)}`);
  const sid = session.body.session;
  check(typeof sid === 'string' && sid !== '', `no session id in ${JSON.stringify(session.body)}`);
  if (state.sid) check(sid === state.sid, `the session endpoint names ${sid}, the tokens ${state.sid}`);
  const record = kubectlJson('get', 'accesssession', sid);
  check(record.spec.subject === state.subject, `AccessSession ${sid} is of ${record.spec.subject}, not ${state.subject}`);
  check(record.spec.email === user, `AccessSession ${sid} has email ${record.spec.email}`);
  check(!record.spec.revoked, `AccessSession ${sid} is already revoked`);

  kubectl('patch', 'accesssession', sid, '--type', 'merge', '-p', '{"spec":{"revoked":true,"revocationReason":"seed story step 4"}}');
  const deadline = Date.now() + (POLL_SECONDS + 10) * 1000;
  let status = '';
  while (Date.now() < deadline) {
    status = (await poll.locator('#status').innerText()).trim();
    if (status !== 'ok') break;
    await sleep(250);
  }
  const last = (await poll.locator('#last').innerText()).trim();
  check(status === 'session ended', `the poll page says ${JSON.stringify(status)} (${last}) after the revocation`);
  check(last.includes('HTTP 401'), `the poll's last answer was not a 401: ${last}`);
  check(state.pollNavigations.length === 0, `the poll page navigated: ${state.pollNavigations.join(', ')}`);
  check(poll.url() === pollUrl, `the poll page is now ${poll.url()}`);
  const login = await poll.locator('#login').getAttribute('href');
  check(login && login.startsWith(`${apps}/.portcullis/begin?`), `the poll page's login link is ${login}`);

  const answer = await pageFetch(poll, '/wordpress/api/whoami');
  check(answer.status === 401, `fetch after the revocation: ${answer.status} ${JSON.stringify(answer.body)}`);
  check((answer.contentType || '').startsWith('application/json'), `the 401 is ${answer.contentType}, not JSON`);
  check(answer.body && answer.body.error === 'session_revoked', `the 401 says ${JSON.stringify(answer.body)}`);
  check(
    typeof answer.body.login_url === 'string' && answer.body.login_url.startsWith(`${apps}/.portcullis/begin?`),
    `the 401's login_url is ${answer.body.login_url}`,
  );
  await shot(poll, '04a-poll-session-ended');
  await poll.close();
  state.poll = null;

  const page = state.page;
  await open(page, appOne);
  await expectLoginPage(page, `${appOne} after revoking the session`);
  check(
    reauthenticationAsked(ctx),
    `the login after the revocation does not ask Dex to authenticate again: ${lastAuthorization(ctx)}`,
  );
  await shot(page, '04b-login-after-revocation');
  await open(page, otherHost);
  await expectLoginPage(page, `${otherHost} after revoking the session`);
  log(`session ${sid} revoked: the poll got 401 session_revoked, both hosts send the browser to Dex`);
}

async function step5(ctx) {
  const page = state.page;
  await open(page, appOne);
  await expectLoginPage(page, `${appOne} before logging in again`);
  await logIn(page);
  await expectIdentity(page, apps, 'app one after logging in again');
  const fresh = await pageFetch(page, '/.portcullis/session?path=/wordpress');
  check(fresh.status === 200 && fresh.body.session !== state.sid, `no new session after logging in again: ${JSON.stringify(fresh.body)}`);
  await open(page, otherHost);
  await expectIdentity(page, express, 'the other host after logging in again');
  log(`logged in again (session ${fresh.body.session})`);

  const policy = kubectlJson('get', 'accesspolicy', policyName);
  const epoch = Number(policy.spec.revocationEpoch || 0) + 1;
  kubectl('patch', 'accesspolicy', policyName, '--type', 'merge', '-p', JSON.stringify({ spec: { revocationEpoch: epoch } }));
  // The gateways learn of the raise from the operator's stream: give it a few seconds.
  const deadline = Date.now() + 20_000;
  for (;;) {
    await open(page, appOne);
    if (onDex(page.url())) break;
    if (Date.now() > deadline) {
      await shot(page, '05-epoch-not-enforced');
      throw new StepFailure(
        `revocationEpoch of AccessPolicy ${namespace}/${policyName} was raised to ${epoch} with kubectl 20s ago, ` +
          `and ${appOne} still shows the app instead of the login page: the raised epoch did not reach ` +
          `the gateways through the operator's stream (see the operator's and gateways' logs)`,
      );
    }
    await sleep(1000);
  }
  await expectLoginPage(page, `${appOne} after raising the epoch`);
  check(reauthenticationAsked(ctx), `no re-authentication asked: ${lastAuthorization(ctx)}`);
  await shot(page, '05a-login-after-epoch-raise');
  await open(page, appTwo);
  await expectLoginPage(page, `${appTwo} after raising the epoch`);

  // The seed's question 1.1: without the app cookie, the (pre-raise) SSO session must not
  // silently issue a new one.
  await ctx.clearCookies({ name: APP_COOKIE, domain: new URL(apps).hostname });
  check((await appCookies(ctx, apps)).length === 0, 'the app cookie is still in the browser');
  await open(page, appOne);
  await expectLoginPage(page, `${appOne} after deleting the app cookie`);
  await page.reload({ waitUntil: 'load' });
  await expectLoginPage(page, `${appOne} reloaded without the app cookie`);
  await shot(page, '05b-login-after-deleting-app-cookie');

  // The other policy's epoch was not raised: its host keeps its single sign-on.
  await open(page, otherHost);
  await expectIdentity(page, express, `${otherHost} (its policy's epoch unchanged)`);
  log('epoch raised: both apps of the policy need a new login, also without the app cookie');
}

async function step6(ctx) {
  const page = state.page;
  await open(page, appOne);
  if (onDex(page.url())) await logIn(page);
  await expectIdentity(page, apps, 'app one before idling');
  // Nothing may talk to the apps while idling.
  for (const other of ctx.pages()) if (other !== page) await other.close();
  await page.goto('about:blank');
  const idle = state.idleTimeout + Math.ceil(state.tokenLifetime / 2) + 5;
  log(`idling ${idle}s (idle timeout ${state.idleTimeout}s)`);
  await sleep(idle * 1000);
  // Reading the session never extends it: it says why the session is over.
  const response = await page.goto(`${apps}/.portcullis/session?path=/wordpress`);
  const body = await response.json().catch(() => null);
  check(
    response.status() === 401 && body && body.error === 'session_idle',
    `/.portcullis/session after ${idle}s idle: ${response.status()} ${JSON.stringify(body)}`,
  );
  await open(page, appOne);
  await expectLoginPage(page, `${appOne} after ${idle}s idle`);
  check(reauthenticationAsked(ctx), `no re-authentication asked after idling: ${lastAuthorization(ctx)}`);
  await shot(page, '06a-login-after-idle');

  await logIn(page);
  await expectIdentity(page, apps, 'app one after the idle login');
  const session = await pageFetch(page, '/.portcullis/session?path=/wordpress');
  check(session.status === 200, `/.portcullis/session answered ${session.status}`);
  const sid = session.body.session;
  await open(page, otherHost);
  await expectIdentity(page, express, 'the other host before logging out');

  await open(page, `${apps}/.portcullis/logout`);
  check(page.url().startsWith(`${auth}/.portcullis/logout`), `logout ended on ${page.url()}`);
  // Not started from the auth host's own pages: the confirmation button signs out.
  await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
  check((await page.innerText('body')).includes('You are signed out'), 'no "signed out" page');
  await shot(page, '06b-signed-out');
  const record = kubectlJson('get', 'accesssession', sid);
  check(record.spec.revoked === true, `AccessSession ${sid} is not revoked after the logout`);
  for (const url of [appOne, appTwo, otherHost]) {
    await open(page, url);
    await expectLoginPage(page, `${url} after logging out everywhere`);
  }
  await shot(page, '06c-locked-after-logout');
  log('idle timeout and logout everywhere: every app sends the browser to Dex');
}

const steps = [
  [1, 'open app one, log in at Dex, app one shows the user', step1],
  [2, 'app two (other path, other host): no login page, same user', step2],
  [3, 'fetch polling across several token lifetimes: no navigation, no error', step3],
  [4, 'kubectl patch the session revoked: 401 JSON for fetch, login page for navigation', step4],
  [5, 'log in again, raise the policy epoch: login page, also without the app cookie', step5],
  [6, 'idle timeout, then logout everywhere locks both apps', step6],
];

async function main() {
  const policy = kubectlJson('get', 'accesspolicy', policyName);
  state.tokenLifetime = seconds(policy.spec.session.tokenLifetime);
  state.idleTimeout = seconds(policy.spec.session.idleTimeout);
  log(`AccessPolicy ${policyName}: tokenLifetime ${state.tokenLifetime}s, idleTimeout ${state.idleTimeout}s`);

  const home = trustingHome();
  const browser = await launch(home);
  log(`Chromium ${browser.version()} (${chromiumBin}), CA ${caFile} trusted through ${home}/.pki/nssdb`);
  let ctx = await newContext(browser);
  try {
    for (const [n, title, run] of steps) {
      log(`step ${n}: ${title}`);
      try {
        await run(ctx);
        results.push({ n, title, ok: true });
        log(`step ${n}: PASS`);
      } catch (error) {
        const reason = error instanceof StepFailure ? error.message : error.stack || String(error);
        results.push({ n, title, ok: false, reason });
        log(`step ${n}: FAIL: ${reason}`);
        for (const [i, page] of ctx.pages().entries()) {
          await shot(page, `step-${n}-failed-${i}`).catch(() => {});
        }
        if (n <= 3) break; // the later steps need a working login, SSO and poll
        // The next step starts from a fresh browser profile, logged in.
        await ctx.close();
        ctx = await newContext(browser);
        state.page = await ctx.newPage();
        state.poll = null;
        await open(state.page, appOne);
        await logIn(state.page);
      }
    }
  } finally {
    await browser.close();
    rmSync(home, { recursive: true, force: true });
  }

  console.log('\nSeed story in Chromium:');
  for (const r of results) console.log(`  step ${r.n} ${r.ok ? 'PASS' : 'FAIL'}: ${r.title}`);
  for (const [n, title] of steps.slice(results.length)) console.log(`  step ${n} NOT RUN: ${title}`);
  for (const r of results.filter((r) => !r.ok)) console.log(`\nstep ${r.n} failed: ${r.reason}`);
  console.log(`\nScreenshots in ${artifacts}:`);
  for (const file of screenshots) console.log(`  ${file}`);
  return results.length === steps.length && results.every((r) => r.ok);
}

main().then(
  (ok) => process.exit(ok ? 0 : 1),
  (error) => {
    console.error(`seed-story: ${error.stack || error}`);
    process.exit(1);
  },
);
