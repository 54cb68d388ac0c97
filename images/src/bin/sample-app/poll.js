// The poll page's script: calls the app's API like a single-page app and shows the answer.
// It builds the page with textContent only: nothing from the API becomes markup. `api` and
// `pollSeconds` are set by the page before this script.
let count = 0;
const $ = (id) => document.getElementById(id);
function show(status, detail) {
  $('status').textContent = status;
  $('last').textContent = new Date().toLocaleTimeString() + ': ' + detail;
}
async function tick() {
  let response;
  try {
    response = await fetch(api, { headers: { Accept: 'application/json' }, credentials: 'same-origin', redirect: 'manual', cache: 'no-store' });
  } catch (e) {
    show('error', 'network error: ' + e);
    return;
  }
  if (response.type === 'opaqueredirect') {
    show('session ended', 'the gateway redirected the call to a login page');
    $('ended').hidden = false;
    $('login').href = location.href;
    return;
  }
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (response.status === 401) {
    show('session ended', 'HTTP 401' + (body && body.error ? ' (' + body.error + ')' : ''));
    $('ended').hidden = false;
    $('login').href = (body && typeof body.login_url === 'string') ? body.login_url : location.href;
    return;
  }
  if (!response.ok || body === null) {
    show('error', 'HTTP ' + response.status + (body && body.error ? ' (' + body.error + ')' : ''));
    return;
  }
  count += 1;
  $('count').textContent = String(count);
  $('email').textContent = body.email || '';
  $('issued').textContent = body.assertion && body.assertion.claims ? new Date(body.assertion.claims.iat * 1000).toLocaleTimeString() : '';
  $('ended').hidden = true;
  show(body.assertion && body.assertion.verified ? 'ok' : 'error', body.assertion && body.assertion.verified ? 'assertion verified' : 'assertion rejected: ' + (body.assertion && body.assertion.error));
}
tick();
setInterval(tick, pollSeconds * 1000);
