// como-saga dashboard: a static single-page app (an ES module), no framework, no build step.
// It lives with the server's CSP: no inline script or style; every API value goes through esc().

const TOKEN_KEY = 'como-saga-token';
const STATUSES = ['running', 'waiting_for_downstream', 'reconciling', 'compensating', 'confirmed', 'compensated', 'cancelled', 'needs_operator'];
const LIVE = ['waiting_for_downstream', 'reconciling', 'needs_operator', 'running', 'compensating'];
const FINISHED = new Set(['confirmed', 'compensated', 'cancelled']);
const STEPS = ['check_credits', 'hold_slot', 'redeem_credits', 'book_experience', 'confirm'];
const QUEUES = {
  requests: 'booking requests, for the orchestrator',
  replies: "workers' replies, for the orchestrator",
  'commands-crm': 'commands for the Memberson worker',
  'commands-sevenrooms': 'commands for the SevenRooms worker',
  notifications: 'needs-operator notifications, for the webhook',
};
const STEP_DOWNSTREAM = { check_credits: 'Memberson', hold_slot: 'SevenRooms', redeem_credits: 'Memberson', book_experience: 'SevenRooms' };
const NAMES = { crm: 'Memberson', memberson: 'Memberson', sevenrooms: 'SevenRooms' };
const UNDO = {
  hold_slot: 'release the SevenRooms hold',
  redeem_credits: 'void the Memberson redemption (the credits go back to the member)',
  book_experience: 'cancel the SevenRooms reservation',
};
const AUDIT_ACTIONS = ['retry_now', 'force_compensation', 'cancel', 'resolve_confirmed', 'resolve_compensated', 'redrive'];
const RETRY_KINDS = new Set(['command_sent', 'reply_received', 'timed_out', 'retry_scheduled', 'waiting_for_downstream']);
const AGES = [['0s', 'any time'], ['10s', '10 seconds'], ['1m', '1 minute'], ['5m', '5 minutes'], ['30m', '30 minutes'], ['1h', '1 hour']];
const DOWNSTREAMS = [['', 'any'], ['memberson', 'Memberson'], ['sevenrooms', 'SevenRooms']];

const S = { token: null, me: null, config: null, overview: null, offset: 0, view: null, operator: false };

// ---------- small helpers ----------
const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));
const esc = (v) => String(v ?? '').replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const human = (s) => String(s ?? '').replace(/_/g, ' ');
const code = (x) => `<code>${esc(x)}</code>`;
const now = () => Date.now() + S.offset;
const pad = (n) => String(n).padStart(2, '0');
const plural = (n, one, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;
const named = (d) => NAMES[String(d || '').toLowerCase()] || d;
const clock = (d, sec = true) => `${pad(d.getHours())}:${pad(d.getMinutes())}${sec ? `:${pad(d.getSeconds())}` : ''}`;
const day = (d) => `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
// Local time (the date too when not today); the UTC ISO string in the title.
function local(iso) {
  const d = new Date(iso);
  if (!iso || isNaN(d)) return String(iso ?? '—');
  return day(d) === day(new Date(now())) ? clock(d) : `${day(d)} ${clock(d)}`;
}
function t(iso) {
  const d = new Date(iso);
  if (!iso || isNaN(d)) return iso ? esc(iso) : '—';
  return `<time datetime="${esc(iso)}" title="${d.toISOString()} UTC">${local(iso)}</time>`;
}
function dur(ms) {
  if (ms == null || isNaN(ms)) return '—';
  let s = Math.max(0, Math.floor(ms / 1000));
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  s %= 60;
  return d ? `${d}d ${h}h` : h ? `${h}h ${m}m` : m ? `${m}m ${s}s` : `${s}s`;
}
const age = (iso) => (iso ? dur(now() - Date.parse(iso)) : '—');
const badge = (st, extra = '') => `<span class="badge s-${esc(st)}"${extra}>${esc(st)}</span>`;
const sagaLink = (id) => `<a href="#/saga/${encodeURIComponent(id)}" title="${esc(id)}" aria-label="saga ${esc(id)}"><code>${esc(String(id).slice(0, 8))}…</code></a>`;
const stepCell = (s) => (s ? code(s) : '—');
// A table: columns named, '#' first for a number column; the empty text when no row.
const tbl = (cols, rows, empty, attrs = '') => `<div class="table-wrap"><table${attrs}><thead><tr>${cols.map((c) => `<th scope="col"${c[0] === '#' ? ' class="num"' : ''}>${c.replace(/^#/, '')}</th>`).join('')}</tr></thead><tbody>${rows || `<tr><td colspan="${cols.length}" class="empty">${empty}</td></tr>`}</tbody></table></div>`;
const errBox = (e) => `<p class="error" role="alert">${esc(e.message || e)}</p>`;
const toInput = (iso) => (iso && !isNaN(new Date(iso)) ? `${day(new Date(iso))}T${clock(new Date(iso), false)}` : '');
const fromInput = (v) => (v && !isNaN(new Date(v)) ? new Date(v).toISOString() : '');
function uuid() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 15) | 64;
  b[8] = (b[8] & 63) | 128;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
// Replaces a region's HTML only when it changed, keeping keyboard focus on the same control.
function swap(el, html) {
  if (!el || el.__html === html) return;
  const key = (n) => n.dataset.key || n.getAttribute('href') || n.id;
  const a = document.activeElement;
  const had = a && a !== el && el.contains(a) ? key(a) : null;
  el.innerHTML = html;
  el.__html = html;
  if (had) { const n = $$('[data-key],[href],[id]', el).find((x) => key(x) === had); if (n) n.focus(); }
}
let announced = 0;
function announce(msg) {
  const el = $('#announce');
  el.textContent = '';
  clearTimeout(announced);
  announced = setTimeout(() => { el.textContent = msg; }, 60);
}
// A refresh that never overlaps itself: asked for while it runs, it runs once more after.
function serial(fn) {
  let running = false, again = false;
  const run = async () => {
    if (running) { again = true; return; }
    running = true;
    try { await fn(); } finally { running = false; if (again) { again = false; run(); } }
  };
  return run;
}

// ---------- the API ----------
class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}
async function api(path, { method = 'GET', body, auth = true } = {}) {
  const headers = { Accept: 'application/json' };
  if (auth) headers.Authorization = `Bearer ${S.token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: 'no-store' });
  } catch (e) {
    throw new ApiError(0, `Cannot reach the API (${e.message}).`);
  }
  let data = null;
  try { data = JSON.parse(await res.text()); } catch (_) { /* not JSON */ }
  if (res.ok) return data;
  // Every refusal: {"error": {"code", "message", "field"?}}.
  const e = new ApiError(res.status, (data && data.error && data.error.message) || `The API answered ${res.status} ${res.statusText}.`);
  if (res.status === 401 && auth) signOut(e.message);
  throw e;
}
const qs = (o) => new URLSearchParams(Object.entries(o).filter(([, x]) => x !== '' && x != null)).toString();
const quiet = (v, el) => (e) => { if (v.alive && e.status !== 401) swap(el(), errBox(e)); };

// ---------- the live stream: one for the whole app, read with fetch (it needs the header) ----------
const Live = {
  running: false, ctrl: null, timer: 0, delay: 1000, state: 'off',
  start() { if (!this.running) { this.running = true; this.delay = 1000; this.connect(); } },
  stop() { this.running = false; if (this.ctrl) this.ctrl.abort(); clearTimeout(this.timer); this.set('off'); },
  set(state) {
    if (state === this.state) return;
    if (state === 'reconnecting' && this.state === 'live') announce('Live updates interrupted: reconnecting.');
    if (state === 'live' && this.state === 'reconnecting') announce('Live updates back.');
    this.state = state;
    $('#live').dataset.state = state;
    $('#live-text').textContent = { live: 'live', reconnecting: 'reconnecting…', off: 'offline' }[state];
  },
  async connect() {
    if (!this.running) return;
    const ctrl = (this.ctrl = new AbortController());
    try {
      const res = await fetch('/v1/live', { headers: { Authorization: `Bearer ${S.token}`, Accept: 'text/event-stream' }, signal: ctrl.signal, cache: 'no-store' });
      if (res.status === 401) {
        const d = await res.json().catch(() => null);
        signOut((d && d.error && d.error.message) || 'Your session has ended: sign in again.');
        return;
      }
      if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}`);
      this.set('live');
      const reader = res.body.getReader();
      const dec = new TextDecoder();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf = (buf + dec.decode(value, { stream: true })).replace(/\r\n/g, '\n');
        for (let i; (i = buf.indexOf('\n\n')) >= 0; buf = buf.slice(i + 2)) this.frame(buf.slice(0, i));
      }
    } catch (_) { /* the stream failed: retried below */ }
    if (ctrl.signal.aborted || !this.running) return;
    this.set('reconnecting');
    this.timer = setTimeout(() => this.connect(), this.delay);
    this.delay = Math.min(this.delay * 2, 10000);
  },
  // One SSE frame: `event:` and `data:` lines; lines starting with ':' are keep-alives.
  frame(text) {
    let event = 'message';
    const data = [];
    for (const line of text.split('\n')) {
      if (!line || line[0] === ':') continue;
      const k = line.indexOf(':');
      const field = k < 0 ? line : line.slice(0, k);
      const val = k < 0 ? '' : line.slice(k + 1).replace(/^ /, '');
      if (field === 'event') event = val;
      else if (field === 'data') data.push(val);
    }
    if (!data.length) return;
    this.delay = 1000;
    if (event !== 'overview') return;
    try { gotOverview(JSON.parse(data.join('\n'))); } catch (_) { /* a malformed frame: skipped */ }
  },
};
function gotOverview(ov) {
  S.overview = ov;
  const at = Date.parse(ov && ov.at);
  if (!isNaN(at)) S.offset = at - Date.now();
  if (S.view && S.view.alive && S.view.onLive) S.view.onLive(ov);
}

// ---------- the confirmation dialog: what will happen, a reason, Confirm / Back ----------
const Dlg = { onConfirm: null, opener: null, busy: false };
function openDialog({ title, body, onConfirm, setup }) {
  $('#dialog-title').textContent = title;
  $('#dialog-body').innerHTML = body;
  $('#dialog-reason').value = '';
  $('#dialog-error').hidden = true;
  $('#dialog-confirm').disabled = true;
  Object.assign(Dlg, { onConfirm, opener: document.activeElement, busy: false });
  if (setup) setup($('#dialog-body'));
  $('#dialog').showModal();
  $('#dialog-reason').focus();
}
function wireDialog() {
  const dlg = $('#dialog'), reason = $('#dialog-reason'), ok = $('#dialog-confirm'), err = $('#dialog-error');
  reason.addEventListener('input', () => { ok.disabled = Dlg.busy || !reason.value.trim(); });
  $('#dialog-back').addEventListener('click', () => dlg.close());
  dlg.addEventListener('cancel', (e) => { if (Dlg.busy) e.preventDefault(); });
  dlg.addEventListener('close', () => {
    const o = Dlg.opener;
    const back = o && document.contains(o) ? o : $('main h1');
    if (back) back.focus();
  });
  $('#dialog-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const why = reason.value.trim();
    if (!why || Dlg.busy) return;
    Dlg.busy = true;
    ok.disabled = true;
    err.hidden = true;
    ok.textContent = 'Working…';
    try {
      await Dlg.onConfirm(why, $('#dialog-body'));
      Dlg.busy = false;
      dlg.close();
    } catch (x) {
      Dlg.busy = false;
      ok.disabled = false;
      if (x.status === 401) return;
      err.textContent = x.message;
      err.hidden = false;
      announce(`Refused: ${x.message}`);
    } finally {
      ok.textContent = 'Confirm';
    }
  });
}

// ---------- sign-in ----------
function showSignIn(message) {
  S.me = null;
  if (S.view) S.view.alive = false;
  S.view = null;
  for (const id of ['#nav', '#who', '#readonly']) $(id).hidden = true;
  document.title = 'Sign in · como-saga';
  const url = S.config && S.config.signin_url;
  $('#main').innerHTML = `<section class="signin panel" aria-labelledby="signin-h"><h1 id="signin-h" tabindex="-1">Sign in</h1>
    ${message ? `<p class="error" role="alert" data-testid="signin-error">${esc(message)}</p>` : ''}
    ${url ? `<p><a class="btn primary" href="${esc(url)}">Sign in with your organisation (Cognito)</a></p><p class="note">or</p>` : ''}
    <form id="signin-form"><label class="field block" for="token-input"><strong>Sign in with a token</strong>
    <textarea id="token-input" name="token" rows="6" autocomplete="off" spellcheck="false" placeholder="eyJhbGciOi…"></textarea></label>
    <p class="note">Paste a bearer token (JWT). It is kept in this browser tab only, until you sign out.</p>
    <div class="buttons"><button type="submit" class="btn primary" id="signin-button">Sign in</button></div></form></section>`;
  $('#signin-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const tok = $('#token-input').value.trim().replace(/^Bearer\s+/i, '');
    if (!tok) return showSignIn('Paste a token first.');
    S.token = tok;
    sessionStorage.setItem(TOKEN_KEY, tok);
    enter(true);
  });
  $('#token-input').focus();
}
function signOut(message) {
  Live.stop();
  S.token = S.overview = null;
  sessionStorage.removeItem(TOKEN_KEY);
  if ($('#dialog').open) $('#dialog').close();
  showSignIn(message);
}
// Signed in from the form, focus moves to the first view's heading; on a page load it stays put.
async function enter(fromForm) {
  $('#main').innerHTML = '<p class="loading">Signing in…</p>';
  try {
    S.me = await api('/v1/me');
  } catch (e) {
    if (e.status !== 401) showSignIn(e.message);
    return;
  }
  const roles = Array.isArray(S.me.roles) ? S.me.roles : [];
  S.operator = roles.includes('operator');
  $('#who-text').innerHTML = `Signed in as <strong data-testid="whoami">${esc(S.me.id)}</strong>${roles.map((r) => ` <span class="role">${esc(r)}</span>`).join('')}`;
  $('#who').hidden = $('#nav').hidden = false;
  const ro = $('#readonly');
  ro.hidden = S.operator;
  ro.textContent = roles.length > 1 ? `read-only: your roles are ${roles.join(' and ')}` : `read-only: your role is ${roles[0] || 'none'}`;
  Live.start();
  route(!fromForm);
}

// ---------- routing: #/overview, #/stuck, #/failing, #/saga/<id>, #/audit, #/bulk, #/dead-letters ----------
function route(first) {
  if (!S.me) return;
  const h = location.hash.replace(/^#/, '') || '/overview';
  const [path, query = ''] = h.split('?');
  const params = new URLSearchParams(query);
  const m = path.match(/^\/saga\/([^/]+)$/);
  const views = { '/': overviewView, '/overview': overviewView, '/stuck': stuckView, '/failing': failingView, '/audit': auditView, '/bulk': bulkView, '/dead-letters': deadLettersView };
  const view = m ? sagaView(decodeURIComponent(m[1])) : views[path] ? views[path](params) : {
    title: 'Not found',
    mount: (el) => { el.innerHTML = `<h1 tabindex="-1">Not found</h1><p>No view at ${code(path)}. <a href="#/overview">Go to the overview</a>.</p>`; },
  };
  if (S.view) S.view.alive = false;
  view.alive = true;
  S.view = view;
  for (const a of $$('#nav a')) {
    if (a.dataset.view === view.name) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  document.title = `${view.title} · como-saga`;
  const main = $('#main');
  main.innerHTML = '';
  view.mount(main);
  if (!first && $('h1', main)) $('h1', main).focus();
}

// ---------- filters (kept in the hash query, so a link reproduces the view) ----------
// field: {name, label, type: text|select|datetime|checkbox|checks, options, def}
function filterFields(fields, params) {
  return fields.map((f) => {
    const v = params.has(f.name) ? params.get(f.name) : f.def || '';
    const id = `f-${f.name}`;
    if (f.type === 'select') {
      return `<label class="field" for="${id}">${f.label}<select id="${id}" name="${f.name}">${f.options.map((o) => {
        const [val, text] = Array.isArray(o) ? o : [o, o || 'any'];
        return `<option value="${esc(val)}"${val === v ? ' selected' : ''}>${esc(text)}</option>`;
      }).join('')}</select></label>`;
    }
    if (f.type === 'checkbox') return `<label class="check"><input type="checkbox" name="${f.name}" id="${id}"${v === 'true' ? ' checked' : ''}> ${f.label}</label>`;
    if (f.type === 'checks') {
      const on = v ? v.split(',') : f.options;
      return `<fieldset><legend>${f.label}</legend>${f.options.map((o) => `<label class="check"><input type="checkbox" name="${f.name}" value="${o}"${on.includes(o) ? ' checked' : ''}> ${human(o)}</label>`).join('')}</fieldset>`;
    }
    const dt = f.type === 'datetime';
    return `<label class="field" for="${id}">${f.label}<input type="${dt ? 'datetime-local' : 'text'}" id="${id}" name="${f.name}" value="${esc(dt ? toInput(v) : v)}" autocomplete="off"></label>`;
  }).join('');
}
function readFilters(form, fields) {
  const p = new URLSearchParams();
  for (const f of fields) {
    const el = form.elements[f.name];
    let v;
    if (f.type === 'checks') {
      const on = $$(`input[name="${f.name}"]:checked`, form).map((x) => x.value);
      v = on.length && on.length < f.options.length ? on.join(',') : '';
    } else if (f.type === 'checkbox') v = el.checked ? 'true' : '';
    else v = f.type === 'datetime' ? fromInput(el.value) : el.value.trim();
    if (v) p.set(f.name, v);
  }
  return p;
}
const filterForm = (fields, params) => `<section class="panel"><form class="filters" id="filters" aria-label="Filters">${filterFields(fields, params)}
  <div class="buttons"><button type="submit" class="btn primary">Apply</button><button type="reset" class="btn">Reset</button></div></form></section>`;
function wireFilters(path, fields, onChange) {
  const form = $('#filters');
  const apply = () => {
    const p = readFilters(form, fields);
    const q = String(p).replace(/%2C/g, ',');
    history.replaceState(null, '', `#${path}${q ? `?${q}` : ''}`);
    onChange(p);
  };
  form.addEventListener('submit', (e) => { e.preventDefault(); apply(); });
  form.addEventListener('change', (e) => { if (e.target.type !== 'text') apply(); });
  form.addEventListener('reset', (e) => {
    e.preventDefault();
    history.replaceState(null, '', `#${path}`);
    route();
  });
}

// ---------- 1. overview ----------
function chart(series, atIso, kind) {
  const W = 600, H = 150, L = 36, R = 8, T = 10, B = 24, pw = (W - L - R) / 60, ph = H - T - B;
  const end = Math.floor(Date.parse(atIso) / 60000) * 60000;
  const slots = new Array(60).fill(null);
  for (const b of series) {
    const i = 59 - Math.round((end - Date.parse(b.minute)) / 60000);
    if (i >= 0 && i < 60) slots[i] = b;
  }
  const started = kind === 'started';
  // The compensation rate is blank where nothing finished.
  const vals = slots.map((b) => (!b ? null : started ? b.started || 0 : b.finished > 0 ? (100 * (b.compensated || 0)) / b.finished : null));
  const seen = vals.filter((v) => v != null);
  const top = Math.max(started ? 5 : 10, ...seen);
  const max = started ? Math.ceil(top / 5) * 5 : Math.min(100, Math.ceil(top / 10) * 10);
  const y = (v) => (T + ph - (v / max) * ph).toFixed(1);
  let g = `<line class="grid" x1="${L}" x2="${W - R}" y1="${T}" y2="${T}"/><line class="grid" x1="${L}" x2="${W - R}" y1="${y(max / 2)}" y2="${y(max / 2)}"/><line class="axis" x1="${L}" x2="${W - R}" y1="${T + ph}" y2="${T + ph}"/>`;
  g += `<text x="${L - 5}" y="${T + 4}" text-anchor="end">${max}${started ? '' : '%'}</text><text x="${L - 5}" y="${T + ph + 4}" text-anchor="end">0</text>`;
  for (const [i, anchor] of [[0, 'start'], [30, 'middle'], [59, 'end']]) {
    g += `<text x="${L + i * pw + (i === 59 ? pw : 0)}" y="${H - 6}" text-anchor="${anchor}">${clock(new Date(end - (59 - i) * 60000), false)}</text>`;
  }
  let d = '', open = false;
  vals.forEach((v, i) => {
    if (v == null) { open = false; return; }
    if (started) {
      if (v) g += `<rect class="bar" x="${(L + i * pw + 1).toFixed(1)}" y="${y(v)}" width="${(pw - 2).toFixed(1)}" height="${(T + ph - y(v)).toFixed(1)}"/>`;
      return;
    }
    const x = (L + i * pw + pw / 2).toFixed(1);
    d += `${open ? 'L' : 'M'}${x} ${y(v)} `;
    open = true;
    g += `<circle class="dotp" cx="${x}" cy="${y(v)}" r="2.2"/>`;
  });
  if (d) g += `<path class="rate" d="${d.trim()}"/>`;
  const last = [];
  for (let i = 59; i >= 0 && last.length < 5; i--) if (slots[i]) last.unshift(vals[i] == null ? 'blank' : started ? vals[i] : `${Math.round(vals[i])}%`);
  const label = started
    ? `Sagas started per minute: ${seen.reduce((a, b) => a + b, 0)} in all, at most ${Math.max(0, ...seen)} in a minute; the last minutes: ${last.join(', ') || 'no data'}.`
    : `Compensation rate per minute (compensated of finished); the last minutes: ${last.join(', ') || 'no data'}.`;
  return `<svg viewBox="0 0 ${W} ${H}" role="img" aria-label="${esc(label)}">${g}</svg>`;
}
function overviewView() {
  const v = { name: 'overview', title: 'Overview' };
  let needs = null;
  v.mount = (el) => {
    el.innerHTML = '<div class="row"><h1 tabindex="-1">Overview</h1><span class="spacer"></span><span class="note" id="ov-at"></span></div><div id="ov"><p class="loading">Loading…</p></div>';
    if (S.overview) render(S.overview);
    api('/v1/overview').then((ov) => v.alive && gotOverview(ov), (e) => { if (!S.overview) quiet(v, () => $('#ov'))(e); });
  };
  v.onLive = (ov) => render(ov);
  function render(ov) {
    if (!v.alive || !ov) return;
    $('#ov-at').innerHTML = `as of ${t(ov.at)}`;
    const c = ov.counts || {};
    const by = new Map((c.by_status || []).map((x) => [x.status, x.count]));
    const n = by.get('needs_operator') || 0;
    if (needs !== null && n !== needs) announce(`${plural(n, 'saga')} waiting for an operator.`);
    needs = n;
    const cards = STATUSES.map((s) => `<li class="card c-${s}${s === 'needs_operator' && by.get(s) ? ' alert' : ''}" data-status="${s}"><span class="n">${esc(by.get(s) || 0)}</span><span class="l">${human(s)}</span></li>`).join('');
    const since = Date.parse(ov.series_since);
    const span = !isNaN(since) && Date.parse(ov.at) - since < 3600000 ? `since ${clock(new Date(since), false)}` : 'last hour';
    const circuits = (ov.circuits || []).map((x) => {
      const st = ['closed', 'open'].includes(x.state) ? x.state : 'unknown';
      const text = { closed: `<span class="state">closed</span>${x.since ? `<span class="muted">since ${t(x.since)}</span>` : ''}`, open: `<span class="state">OPEN</span><span>since ${t(x.since)}, next probe ${t(x.next_probe_at)}</span>`, unknown: '<span class="state">unknown</span><span class="muted">its record could not be read</span>' }[st];
      return `<li class="circuit ${st}" data-downstream="${esc(x.downstream)}"><span class="name">${esc(named(x.downstream))}</span>${text}</li>`;
    }).join('');
    const steps = (c.by_step || []).map((x) => `<tr><td>${badge(x.status)}</td><td>${code(x.step)}</td><td class="num">${esc(x.count)}</td></tr>`).join('');
    const queues = (ov.queues || []).map((q) => `<tr><th scope="row">${code(q.queue)}</th><td class="num">${esc(q.visible)}</td><td class="num">${esc(q.not_visible)}</td><td class="num">${esc(q.dead_letters)}</td><td class="num">${q.oldest_age_seconds == null ? '—' : `<span title="sent ${esc(q.oldest_sent_at || '')}">${dur(q.oldest_age_seconds * 1000)}</span>`}</td></tr>`).join('');
    const dl = ov.dead_letters || 0;
    const panel = (id, title, body, cls = 'panel') => `<section class="${cls}" aria-labelledby="h-${id}">${title.replace('<h2>', `<h2 id="h-${id}">`)}${body}</section>`;
    swap($('#ov'), `<section aria-label="Sagas by status"><ul class="cards" data-testid="status-counts">${cards}<li class="card total"><span class="n">${esc(c.total ?? 0)}</span><span class="l">total</span></li></ul></section>
      <div class="grid2">${panel('started', `<div class="cap"><h2>Sagas started per minute</h2><span>${span}</span></div>`, chart(ov.series || [], ov.at, 'started'), 'panel chart')}
      ${panel('comp', `<div class="cap"><h2>Compensation rate per minute</h2><span>${span} · blank: none finished</span></div>`, chart(ov.series || [], ov.at, 'rate'), 'panel chart')}</div>
      <div class="grid2">${panel('circ', '<h2>Downstream circuits</h2>', `<ul class="circuits">${circuits || '<li class="note">No circuit reported.</li>'}</ul>
        <h2>Dead letters</h2><p class="bigdl${dl ? ' alert' : ''}"><span class="n">${esc(dl)}</span><a href="#/dead-letters">${dl ? 'Look at the dead letters' : 'Dead letters'}</a></p>`)}
      ${panel('steps', '<h2>Sagas in progress, by step</h2>', tbl(['Status', 'Step', '#Sagas'], steps, 'No saga in progress'))}</div>
      ${panel('q', '<h2>Queues</h2>', tbl(['Queue', '#Waiting', '#In flight', '#Dead letters', '#Oldest message'], queues, 'No queue reported'))}`);
  }
  return v;
}

// ---------- 2, 4, 5a. the lists: stuck, failing, audit ----------
function listView(o, params) {
  const v = { name: o.name, title: o.title };
  let p = params, cursors = [], next = null, count = null;
  const load = serial(async () => {
    let page;
    try { page = await api(o.url(p, cursors[cursors.length - 1] || '')); } catch (e) { return quiet(v, () => $('#out'))(e); }
    if (!v.alive) return;
    const items = page.items || [];
    next = page.next_cursor || null;
    if (o.announce && items.length !== count) announce(o.announce(items.length));
    count = items.length;
    const pager = `<div class="pager">${cursors.length ? '<button type="button" class="btn small" data-key="first">First page</button>' : ''}${next ? '<button type="button" class="btn small" data-key="next">Next page</button>' : ''}</div>`;
    swap($('#out'), (o.summary ? o.summary(items) : '') + tbl(o.cols, items.map(o.row).join(''), o.empty, o.attrs) + pager);
  });
  v.mount = (el) => {
    el.innerHTML = `<h1 tabindex="-1">${o.heading}</h1><p class="note">${o.intro}</p>${filterForm(o.fields, p)}<section id="out" aria-label="Results"><p class="loading">Loading…</p></section>`;
    wireFilters(`/${o.name}`, o.fields, (np) => { p = np; cursors = []; load(); });
    $('#out').addEventListener('click', (e) => {
      const k = e.target.closest('button') && e.target.closest('button').dataset.key;
      if (k === 'next' && next) cursors.push(next);
      if (k === 'first') cursors = [];
      if (k) load();
    });
    load();
  };
  v.onLive = () => { if (!o.firstPageOnly || !cursors.length) load(); };
  return v;
}
const filterParams = (p, names) => Object.fromEntries(names.map((k) => [k, p.get(k) || '']));
const COMMON = ['step', 'downstream', 'member', 'venue', 'started_from', 'started_before'];
const commonFields = [
  { name: 'step', label: 'Step', type: 'select', options: ['', ...STEPS] },
  { name: 'downstream', label: 'Downstream', type: 'select', options: DOWNSTREAMS },
  { name: 'member', label: 'Member', type: 'text' },
  { name: 'venue', label: 'Venue', type: 'text' },
  { name: 'started_from', label: 'Started from', type: 'datetime' },
  { name: 'started_before', label: 'Started before', type: 'datetime' },
];
// Why a saga waits, from its summary.
function reasonOf(s) {
  const st = s.status || {};
  if (st.status === 'needs_operator') return `<strong>${esc(human(st.reason))}</strong>: ${esc(st.detail)}`;
  if (st.status === 'waiting_for_downstream') return `waiting for ${esc(named(st.downstream))}${st.compensating ? ' (to undo)' : ''}${st.since ? `, since ${t(st.since)}` : ''}`;
  if (st.status === 'reconciling') return 'outcome unknown: looking it up';
  if (st.status === 'running' && st.retry_at) return `retrying: ${esc(s.last_error || 'failed')}, next attempt ${t(st.retry_at)}`;
  return s.last_error ? esc(s.last_error) : 'no change';
}
function stuckView(params) {
  if (!params.has('older_than')) params.set('older_than', '5m');
  return listView({
    name: 'stuck', title: 'Stuck', heading: 'Stuck sagas', intro: 'Sagas not finished and unchanged for a while, the longest unchanged first. The list follows the live updates by itself.',
    fields: [{ name: 'older_than', label: 'Unchanged for at least', type: 'select', def: '5m', options: AGES }, { name: 'status', label: 'Status', type: 'checks', options: LIVE }, ...commonFields, { name: 'retrying', label: 'Only retrying with errors', type: 'checkbox' }],
    url: (p) => `/v1/stuck?${qs({ older_than: p.get('older_than') || '5m', status: p.get('status') || '', limit: 100, ...filterParams(p, [...COMMON, 'retrying']) })}`,
    cols: ['Saga', 'Status', 'Step', 'Why it waits', 'Unchanged for', 'Member', 'Venue'], empty: 'Nothing stuck', attrs: ' data-testid="stuck-table"',
    announce: (n) => (n ? `Stuck list: ${plural(n, 'saga')}.` : 'Nothing stuck.'),
    summary: (items) => `<p class="note">${items.length ? `${plural(items.length, 'saga')}${items.length >= 100 ? ' (the first 100)' : ''}` : ''}</p>`,
    row: (s) => `<tr data-saga-id="${esc(s.saga_id)}" data-status="${esc(s.status && s.status.status)}"><td>${sagaLink(s.saga_id)}</td><td>${badge(s.status && s.status.status)}</td><td>${stepCell(s.step)}</td><td class="wrap">${reasonOf(s)}</td><td class="nowrap" title="updated ${esc(s.updated_at)}">${age(s.updated_at)}</td><td>${code(s.member_no)}</td><td>${esc(s.venue_id)}</td></tr>`,
  }, params);
}
function failingView(params) {
  return listView({
    name: 'failing', title: 'Failing', heading: 'Still running, but failing', intro: 'Live sagas whose current command has failed at least once, with the last error. The list follows the live updates.',
    fields: [{ name: 'status', label: 'Status', type: 'select', options: ['', ...LIVE] }, ...commonFields],
    url: (p, cursor) => `/v1/sagas?${qs({ retrying: 'true', limit: 100, cursor, ...filterParams(p, ['status', ...COMMON]) })}`,
    cols: ['Saga', 'Step', 'Command', '#Attempt', 'Last error', 'Next attempt', 'Age', 'Status'], empty: 'No saga is retrying',
    row: (s) => `<tr data-saga-id="${esc(s.saga_id)}"><td>${sagaLink(s.saga_id)}</td><td>${stepCell(s.step)}</td><td>${esc(s.command || '—')}${s.downstream ? ` <span class="muted">→ ${esc(named(s.downstream))}</span>` : ''}</td><td class="num">${esc(s.attempt ?? '—')}</td><td class="wrap">${esc(s.last_error || '—')}</td><td class="nowrap">${t((s.status && s.status.retry_at) || s.wake_at)}</td><td class="nowrap" title="started ${esc(s.started_at)}">${age(s.started_at)}</td><td>${badge(s.status && s.status.status)}</td></tr>`,
  }, params);
}
function auditView(params) {
  const outcome = { applied: 's-confirmed', pending: 's-reconciling', refused: 's-needs_operator', failed: 's-needs_operator' };
  const target = (x) => {
    const m = /^(?:saga\/)?([0-9a-fA-F-]{36})$/.exec(x || '');
    return m ? sagaLink(m[1]) : /^dead-letters\//.test(x || '') ? `<a href="#/dead-letters">${esc(x)}</a>` : esc(x);
  };
  return listView({
    name: 'audit', title: 'Audit', heading: 'Audit', intro: 'Every operator action (single, bulk, redrive): who, what, why and how it ended, newest first.', firstPageOnly: true,
    fields: [{ name: 'actor', label: 'Who', type: 'text' }, { name: 'action', label: 'Action', type: 'select', options: ['', ...AUDIT_ACTIONS] }, { name: 'from', label: 'From', type: 'datetime' }, { name: 'until', label: 'Until', type: 'datetime' }],
    url: (p, cursor) => `/v1/audit?${qs({ limit: 50, cursor, ...filterParams(p, ['actor', 'action', 'from', 'until']) })}`,
    cols: ['When', 'Who', 'What', 'Target', 'Why', 'Outcome', 'Detail'], empty: 'No operator action',
    row: (x) => `<tr><td class="nowrap">${t(x.at)}</td><td class="nowrap">${esc(x.actor)}</td><td class="nowrap">${esc(human(x.action))}</td><td>${target(x.target)}</td><td class="wrap why">${esc(x.reason)}</td><td><span class="badge ${outcome[x.outcome] || ''}"${x.finished_at ? ` title="finished ${esc(x.finished_at)}"` : ''}>${esc(x.outcome)}</span></td><td class="wrap">${esc(x.detail || '')}${x.action_id ? `<br><span class="muted">action ${code(x.action_id)}</span>` : ''}</td></tr>`,
  }, params);
}

// ---------- 3. one saga ----------
function waitingHtml(sg) {
  const st = sg.status || {}, w = sg.waiting_on;
  let what, sub = '';
  if (!w) {
    what = FINISHED.has(st.status) ? `Finished: <strong>${esc(st.status)}</strong>. Nothing more to do.` : 'Nothing pending is recorded.';
  } else if (w.on === 'reply') {
    what = `Waiting for the reply to <strong>${esc(w.command)}</strong> attempt ${esc(w.attempt)} of ${code(w.step)}${w.worker ? ` from ${esc(named(w.worker))}` : ''}${w.since ? `, sent ${t(w.since)}` : ''}.`;
    sub = `Counted as timed out at ${t(w.timeout_at)}; gives up at ${t(w.deadline)}. Command ${code(w.command_id)}.`;
  } else if (w.on === 'downstream') {
    what = `Waiting for <strong>${esc(named(w.downstream))}</strong> (unavailable) to do the ${esc(w.command)} of ${code(w.step)}${w.since ? `, since ${t(w.since)}` : ''}.`;
    sub = `Looks again at ${t(w.until)}; gives up at ${t(w.deadline)}.`;
  } else if (w.on === 'timer' && w.why === 'retry') {
    what = `Waiting to retry: attempt ${esc(w.attempt ?? '?')} of the ${esc(w.command || 'action')} of ${code(w.step)} goes out at ${t(w.at)}.`;
  } else if (w.on === 'timer') {
    what = `Waiting for a timer (${esc(w.why)})${w.step ? ` for ${code(w.step)}` : ''} at ${t(w.at)}.`;
    if (w.why === 'audit') sub = 'The saga ended; then it looks for late effects of the steps it undid.';
  } else if (w.on === 'operator') {
    what = `Waiting for an operator: <strong>${esc(human(w.reason))}</strong> at ${code(w.step)}.`;
    sub = esc(w.detail);
  } else {
    // A kind of wait this page does not know yet: its fields as they come.
    what = `Waiting on <strong>${esc(w.on)}</strong>: ${Object.entries(w).filter(([k]) => k !== 'on').map(([k, x]) => `${esc(human(k))} ${/(_at|since|until|deadline)$/.test(k) ? t(x) : esc(typeof x === 'object' ? JSON.stringify(x) : x)}`).join(', ')}.`;
  }
  if (st.status === 'needs_operator' && (!w || w.on !== 'operator')) sub += ` Reason: <strong>${esc(human(st.reason))}</strong>: ${esc(st.detail)}`;
  if (sg.audit) sub += ` Late-effect audit: ${plural(sg.audit.rounds, 'round')}, ${esc(sg.audit.undone)} undone${sg.audit.checking ? `, checking ${code(sg.audit.checking)}` : ''}.`;
  const step = sg.current_step || st.step;
  return `<div class="head"><span>Status</span>${badge(st.status, ' data-testid="saga-status"')}${step ? `<span>at step ${code(step)}</span>` : ''}${st.attempt ? `<span class="muted">attempt ${esc(st.attempt)}</span>` : ''}</div>
    <p class="what">${what}</p>${sub ? `<p class="sub">${sub}</p>` : ''}`;
}
// What the downstreams hold for a step: its output, as the worker reported it.
function outputHtml(o) {
  if (!o) return '<span class="muted">—</span>';
  switch (o.kind) {
    case 'slot_held': return `SevenRooms hold ${code(o.hold_id)}`;
    case 'credits_redeemed': return `Memberson receipt ${code(o.receipt_no)}, transaction ${code(o.transaction_id)}${o.balance != null ? `, balance ${esc(o.balance)}` : ''}`;
    case 'experience_booked': return `SevenRooms reservation ${code(o.reservation_id)}`;
    case 'credits_checked': return `balance ${esc(o.balance)} credits`;
    case 'compensated': return `${o.undone ? 'undone' : 'nothing left to undo'}${o.note ? ` (${esc(o.note)})` : ''}`;
    case 'done': return 'done';
    default: return esc(JSON.stringify(o));
  }
}
const attemptsHtml = (a) => ['action', 'reconcile', 'compensation'].filter((k) => a && a[k] && a[k].sent)
  .map((k) => `${k} ${esc(a[k].sent)}${a[k].charged !== a[k].sent ? ` <span class="muted">(${esc(a[k].charged)} counted)</span>` : ''}`).join('<br>') || '<span class="muted">none</span>';
function historyRow(e, i) {
  const d = [];
  if (e.operator) d.push(`<span class="who-op">by ${esc(e.operator)}</span>${e.reason ? `: <span class="why">“${esc(e.reason)}”</span>` : ''}`);
  else if (e.reason) d.push(`<span class="why">“${esc(e.reason)}”</span>`);
  if (e.error) d.push(esc(e.error));
  if (e.detail) d.push(`<span class="muted">${esc(e.detail)}</span>`);
  if (e.scheduled_at) d.push(`next attempt at ${t(e.scheduled_at)}`);
  if (e.until) d.push(`waits until ${t(e.until)}`);
  if (e.not_before) d.push(`not before ${t(e.not_before)}`);
  const outcome = [badge(e.status), e.code && `<strong>${esc(e.code)}</strong>`, e.needs_operator_reason && `<strong>${esc(human(e.needs_operator_reason))}</strong>`].filter(Boolean).join(' ');
  const cls = e.kind === 'operator_action' || e.operator ? ' class="op"' : FINISHED.has(e.kind) ? ' class="final"' : '';
  return `<tr${cls} data-kind="${esc(e.kind)}" data-index="${i}"><td class="nowrap">${t(e.at)}</td><td>${esc(human(e.kind))}</td><td>${e.step ? code(e.step) : ''}</td><td class="nowrap">${esc(e.command || '')}${e.attempt ? ` #${esc(e.attempt)}` : ''}</td><td>${outcome}</td><td class="wrap">${d.join('<br>')}</td></tr>`;
}
// Runs of identical retry cycles fold to the first cycle, one row "… N more identical attempts
// — Show", and the last cycle. A cycle runs from one sending of a step's command to the next
// (its reply, time-out, wait and retry, and any lookup in between); cycles are identical when
// their entries have the same kinds, commands, errors and codes.
function timelineRows(items, base, expanded) {
  const out = [];
  const sig = (cyc) => cyc.map((k) => [items[k].kind, items[k].command, items[k].error, items[k].code, items[k].status].join('\u0001')).join('\u0002');
  const rows = (cyc) => cyc.map((k) => historyRow(items[k], base + k)).join('');
  for (let i = 0; i < items.length;) {
    const e = items[i];
    if (!RETRY_KINDS.has(e.kind)) { out.push(historyRow(e, base + i++)); continue; }
    let j = i;
    while (j < items.length && RETRY_KINDS.has(items[j].kind) && items[j].step === e.step) j++;
    const first = items.slice(i, j).find((x) => x.kind === 'command_sent');
    const cmd = first && first.command;
    const cycles = [];
    for (let k = i; k < j; k++) {
      if (!cycles.length || (items[k].kind === 'command_sent' && items[k].command === cmd)) cycles.push([]);
      cycles[cycles.length - 1].push(k);
    }
    for (let c = 0, d; c < cycles.length; c = d) {
      for (d = c + 1; d < cycles.length && sig(cycles[d]) === sig(cycles[c]);) d++;
      if (d - c < 3) { out.push(cycles.slice(c, d).map(rows).join('')); continue; }
      const folded = cycles.slice(c + 1, d - 1), idx = folded.flat();
      const atts = idx.filter((k) => items[k].kind === 'command_sent' && items[k].command === cmd && items[k].attempt != null).map((k) => items[k].attempt);
      const key = `fold-${base + idx[0]}`, open = expanded.has(key);
      const [lo, hi] = [Math.min(...atts), Math.max(...atts)];
      const range = !atts.length ? `entries ${base + idx[0] + 1}–${base + idx[idx.length - 1] + 1}` : lo === hi ? `attempt ${lo}` : `attempts ${lo}–${hi}`;
      out.push(rows(cycles[c]), `<tr class="collapsed"><td colspan="6">… ${plural(folded.length, 'more identical attempt')} (${range}) — <button type="button" class="linkish" data-fold="${key}" data-key="${key}" aria-expanded="${open}">${open ? 'Hide' : 'Show'}</button></td></tr>`);
      if (open) out.push(folded.map(rows).join(''));
      out.push(rows(cycles[d - 1]));
    }
    i = j;
  }
  return out.join('');
}
// What an action will do, in plain words, for the confirmation dialog.
function actionText(action, sg, outcome) {
  const w = sg.waiting_on || {};
  const step = w.step || sg.current_step || (sg.status && sg.status.step) || 'the current step';
  const done = (sg.steps || []).filter((s) => ['applied', 'maybe'].includes(s.effect) && s.state !== 'compensated' && UNDO[s.name]);
  const undo = done.length ? `<ul>${done.map((s) => `<li>${UNDO[s.name]} (${code(s.name)}${s.effect === 'maybe' ? ', if it took effect' : ''})</li>`).join('')}</ul>` : '<p>No step has taken an effect that needs undoing.</p>';
  if (action === 'retry_now') {
    const ds = named(w.downstream || w.worker) || STEP_DOWNSTREAM[step] || 'its downstream';
    const when = { timer: w.at, downstream: w.until, reply: w.timeout_at }[w.on] || sg.next_wake_at;
    return `<p><strong>Retry now</strong>: sends the next attempt of ${w.command && w.command !== 'action' ? `the ${esc(w.command)} of ` : ''}${code(step)} to ${esc(ds)} immediately${when ? ` instead of waiting until ${local(when)}` : ''}.</p>`;
  }
  if (action === 'force_compensation') return `<p><strong>Force compensation</strong>: stops going forward and undoes the steps already done:</p>${undo}<p>The saga then ends <strong>compensated</strong>.</p>`;
  if (action === 'cancel') return `<p><strong>Cancel</strong>: stops this booking for good. The steps already done are undone:</p>${undo}<p>The saga then ends <strong>cancelled</strong>.</p>`;
  return `<p><strong>Resolve as ${outcome}</strong>: records that you settled this by hand in the downstream systems; nothing is sent. The saga ends <strong>${outcome}</strong>.</p>`;
}
const ACTIONS = [['retry_now', 'Retry now', ''], ['force_compensation', 'Force compensation', ' danger'], ['cancel', 'Cancel', ' danger'], ['resolve', 'Resolve…', '']];
function sagaView(id) {
  const v = { title: `Saga ${id.slice(0, 8)}` };
  const path = `/v1/sagas/${encodeURIComponent(id)}`;
  const expanded = new Set();
  let sg = null, cursor = 0, followLast = false, total = 0, last = null, after = 0;
  const history = async () => {
    if (followLast) cursor = Math.max(0, total - 100);
    return api(`${path}/history?cursor=${cursor}&limit=100`);
  };
  const load = serial(async () => {
    let page;
    try { [sg, page] = await Promise.all([api(path), history()]); } catch (e) { return quiet(v, () => $('#saga-error'))(e); }
    if (!v.alive) return;
    if (followLast && page.total > cursor + 100) { cursor = Math.max(0, page.total - 100); page = await history().catch(() => page); }
    swap($('#saga-error'), '');
    render(page);
  });
  function render(page) {
    const st = sg.status || {}, w = sg.waiting_on, r = sg.request || {}, g = r.guest;
    if (last && last !== st.status) announce(`Saga status now ${st.status}.`);
    last = st.status;
    const box = $('#waiting');
    box.hidden = false;
    box.className = `waiting st-${st.status}`;
    Object.assign(box.dataset, { status: st.status || '', on: w ? w.on : '', why: (w && w.why) || '' });
    swap(box, waitingHtml(sg));
    // The actions: for operators only (absent, not disabled, for anyone else), while it is live.
    swap($('#actions'), !S.operator ? '' : FINISHED.has(st.status) ? '<p class="note">Finished: no action applies.</p>'
      : `<div class="actions" role="group" aria-label="Actions">${ACTIONS.map(([a, label, cls]) => `<button type="button" class="btn${cls}" data-action="${a}" data-key="a-${a}">${label}</button>`).join('')}</div>`);
    const kv = (pairs) => `<dl class="kv">${pairs.filter(Boolean).map(([k, x]) => `<dt>${k}</dt><dd>${x}</dd>`).join('')}</dl>`;
    swap($('#saga-facts'), `<section class="panel" aria-labelledby="h-req"><h2 id="h-req">Booking</h2>${kv([
      ['Member', code(r.member_no)], ['Venue', esc(r.venue_id)], ['When', `${esc(r.date)} ${esc(r.time)}`], ['Party', esc(r.party_size)], ['Credits', esc(r.credits)],
      ['Guest', g ? `${esc(g.first_name)} ${esc(g.last_name)}, ${esc(g.phone)}${g.email ? `, ${esc(g.email)}` : ''}` : r.guest_erased ? `<span class="muted">erased ${t(r.guest_erased.at)} (${esc(human(r.guest_erased.reason))})</span>` : '<span class="muted">hidden for your role</span>'],
      ['Request id', code(r.request_id)]])}</section>
      <section class="panel" aria-labelledby="h-saga"><h2 id="h-saga">Saga</h2>${kv([
      ['Definition', `${esc(sg.definition)} v${esc(sg.definition_version)}`], ['Started', t(sg.started_at)], ['Updated', `${t(sg.updated_at)} <span class="muted">(${age(sg.updated_at)} ago)</span>`],
      ['Deadline', t(sg.deadline)], sg.compensation_deadline && ['Compensation deadline', t(sg.compensation_deadline)], ['Next wake-up', t(sg.next_wake_at)], ['Version', esc(sg.transitions)]])}</section>`);
    swap($('#saga-steps'), tbl(['Step', 'State', 'Effect', 'Attempts', 'Last error', 'What the downstreams hold for it'], (sg.steps || []).map((s) => `<tr${s.name === sg.current_step ? ' class="op"' : ''}><th scope="row">${code(s.name)}</th><td>${esc(human(s.state))}</td><td class="eff-${esc(s.effect)}">${esc(human(s.effect))}</td><td>${attemptsHtml(s.attempts)}</td><td class="wrap">${esc(s.last_error || '')}</td><td>${outputHtml(s.output)}</td></tr>`).join(''), 'No step'));
    total = page.total || 0;
    const items = page.items || [], a = items.length ? cursor + 1 : 0, b = cursor + items.length;
    const btn = (pg, label, on) => `<button type="button" class="btn small" data-page="${pg}" data-key="p-${pg}"${on ? '' : ' disabled'}>${label}</button>`;
    swap($('#timeline'), tbl(['Time', 'Event', 'Step', 'Command', 'Outcome', 'Details'], timelineRows(items, cursor, expanded), 'No entry')
      + `<div class="pager"><span>entries ${a}–${b} of ${total}</span>${total > 100 ? btn('first', 'First', cursor > 0) + btn('prev', 'Previous', cursor > 0) + btn('next', 'Next', !!page.next_cursor) + btn('last', 'Last', !!page.next_cursor) : ''}</div>`);
  }
  function act(action) {
    const resolve = action === 'resolve', actionId = uuid();
    const titles = { retry_now: 'Retry now?', force_compensation: 'Force compensation?', cancel: 'Cancel the booking?', resolve: 'Resolve by hand?' };
    openDialog({
      title: titles[action],
      body: `${resolve ? '<fieldset><legend>Outcome you settled by hand</legend><label class="check"><input type="radio" name="outcome" value="confirmed" checked> confirmed</label><label class="check"><input type="radio" name="outcome" value="compensated"> compensated</label></fieldset>' : ''}
        <div id="dialog-text">${actionText(action, sg, 'confirmed')}</div><p class="note">Saga ${code(id)}.</p>`,
      setup: (body) => $$('input[name=outcome]', body).forEach((x) => x.addEventListener('change', () => { $('#dialog-text').innerHTML = actionText(action, sg, x.value); })),
      onConfirm: async (reason, body) => {
        // One action id per dialog: confirming again after a failure cannot act twice.
        const req = { action, reason, action_id: actionId };
        if (resolve) req.outcome = $('input[name=outcome]:checked', body).value;
        const res = await api(`${path}/actions`, { method: 'POST', body: req });
        const msg = res.repeated ? `Already applied: status ${res.status} (version ${res.version})` : `Done: status now ${res.status} (version ${res.version})`;
        $('#action-result').innerHTML = `<p class="success" data-testid="action-result" data-status="${esc(res.status)}"><strong>${esc(human(res.action))}</strong> — ${esc(msg)}. Action id ${code(res.action_id)}.</p>`;
        announce(msg);
        after = 0;
        load();
      },
    });
  }
  v.mount = (el) => {
    el.innerHTML = `<h1 tabindex="-1">Saga ${code(id)}</h1><div id="saga-error"></div>
      <section class="waiting" id="waiting" data-testid="waiting-on" aria-label="What it waits on now" hidden></section>
      <div id="actions"></div><div id="action-result"></div><div class="grid2" id="saga-facts"></div>
      <section aria-labelledby="h-steps"><h2 id="h-steps">Steps</h2><div id="saga-steps"></div></section>
      <section aria-labelledby="h-tl"><h2 id="h-tl">Timeline</h2><div id="timeline" data-testid="timeline"><p class="loading">Loading…</p></div></section>`;
    $('#actions').addEventListener('click', (e) => {
      const b = e.target.closest('[data-action]');
      if (b && sg && S.operator) act(b.dataset.action);
    });
    $('#timeline').addEventListener('click', (e) => {
      const b = e.target.closest('button');
      if (!b) return;
      const f = b.dataset.fold, pg = b.dataset.page;
      if (f && !expanded.delete(f)) expanded.add(f);
      if (pg) {
        followLast = pg === 'last';
        cursor = { first: 0, prev: Math.max(0, cursor - 100), next: cursor + 100, last: Math.max(0, total - 100) }[pg];
      }
      load();
    });
    load();
  };
  // Follows the saga while it is live, and once more after it finished (for its last entries).
  v.onLive = () => { if (sg && (!FINISHED.has(sg.status && sg.status.status) || after++ < 1)) load(); };
  return v;
}

// ---------- 5b. bulk ----------
const BULK_FIELDS = [
  { name: 'status', label: 'Status', type: 'select', options: ['', ...LIVE] },
  { name: 'older_than', label: 'Unchanged for at least', type: 'select', options: [['', 'any time'], ...AGES.slice(1)] },
  ...commonFields,
  { name: 'retrying', label: 'Only retrying with errors', type: 'checkbox' },
];
function bulkView() {
  const v = { name: 'bulk', title: 'Bulk actions' };
  let preview = null;
  v.mount = (el) => {
    if (!S.operator) {
      el.innerHTML = `<h1 tabindex="-1">Bulk actions</h1><section class="panel"><p>Bulk actions retry, or force the compensation of, many sagas at once: a dry run first lists exactly the sagas it would act on, then it acts on exactly those and reads each result back.</p>
        <p><strong>This page is read-only for you</strong>: it needs the operator role. See the <a href="#/failing">failing</a> and <a href="#/stuck">stuck</a> lists, or the <a href="#/audit">audit</a> of what operators did.</p></section>`;
      return;
    }
    el.innerHTML = `<h1 tabindex="-1">Bulk actions</h1><p class="note">1. A dry run lists exactly the sagas the action would act on (nothing changes). 2. Execute on exactly that list.</p>
      <section class="panel"><form id="bulk-form" class="filters" aria-label="Bulk action">
      <fieldset><legend>Action</legend><label class="check"><input type="radio" name="action" value="retry_now" checked> retry now</label><label class="check"><input type="radio" name="action" value="force_compensation"> force compensation</label></fieldset>
      ${filterFields(BULK_FIELDS, new URLSearchParams())}<div class="buttons"><button type="submit" class="btn primary" data-action="bulk-preview">Preview (dry run)</button></div></form></section>
      <section id="bulk-out"></section>`;
    const form = $('#bulk-form'), out = $('#bulk-out');
    form.addEventListener('input', () => { if (preview) { preview = null; out.innerHTML = '<p class="note">The filters changed: preview again.</p>'; } });
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const body = { action: form.elements.action.value };
      for (const [k, x] of readFilters(form, BULK_FIELDS)) body[k] = k === 'retrying' ? true : x;
      out.innerHTML = '<p class="loading">Previewing…</p>';
      try { preview = await api('/v1/bulk/preview', { method: 'POST', body }); } catch (x) { return quiet(v, () => out)(x); }
      const n = preview.sagas.length;
      out.innerHTML = `<section class="panel"><h2>Dry run: ${esc(human(preview.action))} would act on exactly ${plural(n, 'saga')}</h2>
        <p class="note">This list is fixed: executing acts on these sagas only, never on a new search. Valid until ${t(preview.expires_at)}.</p>
        ${tbl(['Saga', 'Status', 'Step', 'Updated', '#Version'], preview.sagas.map((s) => `<tr data-saga-id="${esc(s.saga_id)}"><td>${sagaLink(s.saga_id)}</td><td>${badge(s.status)}</td><td>${stepCell(s.step)}</td><td>${t(s.updated_at)}</td><td class="num">${esc(s.version)}</td></tr>`).join(''), 'No saga matches')}
        ${n ? `<div class="buttons"><button type="button" class="btn primary" data-action="bulk-execute">Execute on exactly these ${plural(n, 'saga')}</button></div>` : ''}</section>`;
      announce(`Dry run: ${plural(n, 'saga')}.`);
    });
    out.addEventListener('click', (e) => { if (e.target.closest('[data-action="bulk-execute"]') && preview) execute(out); });
  };
  function execute(out) {
    const n = preview.sagas.length, p = preview;
    const what = p.action === 'retry_now' ? "sends the next attempt of each saga's current step immediately" : 'stops each saga going forward and undoes the steps it already did';
    openDialog({
      title: `${human(p.action)} on ${plural(n, 'saga')}?`,
      body: `<p><strong>${esc(human(p.action))}</strong> ${what}, for exactly the ${plural(n, 'saga')} of the dry run, at most 20 a second (about ${Math.ceil(n / 20)} s). Each result is read back.</p>`,
      onConfirm: async (reason) => {
        const res = await api('/v1/bulk/execute', { method: 'POST', body: { preview_token: p.preview_token, reason } });
        const counts = {};
        for (const x of res.results) counts[x.result] = (counts[x.result] || 0) + 1;
        out.innerHTML = `<section class="panel" data-testid="bulk-result"><h2>Executed: ${esc(Object.entries(counts).map(([k, c]) => `${c} ${k}`).join(', ') || 'nothing')}</h2><p class="note">Action id ${code(res.action_id)}, the same for every saga of this dry run.</p>
          ${tbl(['Saga', 'Result', 'Status after', 'Message'], res.results.map((x) => `<tr data-saga-id="${esc(x.saga_id)}"><td>${sagaLink(x.saga_id)}</td><td>${esc(x.result)}</td><td>${x.status_after ? badge(x.status_after) : '—'}</td><td class="wrap">${esc(x.message || '')}</td></tr>`).join(''), 'Nothing done')}</section>`;
        preview = null;
        announce(`Bulk action done on ${plural(res.results.length, 'saga')}.`);
      },
    });
  }
  return v;
}

// ---------- 5c. dead letters ----------
function deadLettersView() {
  const v = { name: 'dead-letters', title: 'Dead letters' };
  const results = {};
  let total = null;
  const one = async (q) => {
    let html;
    try {
      const items = (await api(`/v1/dead-letters?${qs({ queue: q, limit: 100 })}`)).items || [];
      const rows = items.map((x) => `<tr><td>${code(x.message_id)}</td><td class="nowrap">${t(x.dead_lettered_at)}</td><td class="num">${esc(x.receive_count)}</td><td class="wrap">${esc(x.reason)}</td><td><details><summary>${esc(String(x.body).slice(0, 60))}…</summary><pre class="wrap mono">${esc(x.body)}</pre></details></td>${S.operator ? `<td><button type="button" class="btn small" data-action="redrive-one" data-queue="${esc(q)}" data-id="${esc(x.message_id)}" data-key="r-${esc(x.message_id)}">Redrive</button></td>` : ''}</tr>`).join('');
      html = `<p class="row">${plural(items.length, 'dead letter')}${items.length >= 100 ? ' (the first 100)' : ''}${S.operator && items.length ? `<button type="button" class="btn small" data-action="redrive" data-queue="${esc(q)}" data-key="ra-${esc(q)}">Redrive all</button>` : ''}</p>
        ${items.length ? tbl(['Message', 'Dead-lettered', '#Receives', 'Why', 'Body', ...(S.operator ? ['<span class="visually-hidden">Action</span>'] : [])], rows, '') : ''}`;
    } catch (e) {
      if (e.status === 401) return;
      html = errBox(e);
    }
    if (v.alive) swap($(`#dl-${q}`), (results[q] || '') + html);
  };
  const load = serial(() => Promise.all(Object.keys(QUEUES).map(one)));
  function redrive(queue, ids) {
    openDialog({
      title: `Redrive ${ids ? 'this dead letter' : 'every dead letter'} of ${queue}?`,
      body: `<p><strong>Redrive</strong>: puts ${ids ? `the dead letter ${code(ids[0])}` : 'every dead letter'} of ${code(queue)} back on its queue, where it is processed again as if new. Do it once the cause is fixed.</p>`,
      onConfirm: async (reason) => {
        const res = await api('/v1/dead-letters/redrive', { method: 'POST', body: ids ? { queue, message_ids: ids, reason } : { queue, reason } });
        results[queue] = `<p class="success" data-testid="redrive-result">Redriven: ${plural(res.redriven, 'message')} back on ${esc(res.queue)}.</p>`;
        announce(`Redriven: ${plural(res.redriven, 'message')} back on ${res.queue}.`);
        load();
      },
    });
  }
  v.mount = (el) => {
    el.innerHTML = `<h1 tabindex="-1">Dead letters</h1><p class="note">Messages set aside after failing too often, by queue.${S.operator ? '' : ' Read-only for your role.'}</p>
      <div id="queues">${Object.entries(QUEUES).map(([q, d]) => `<section class="panel" aria-labelledby="h-${q}"><h2 id="h-${q}">${code(q)} <span class="muted">— ${d}</span></h2><div id="dl-${q}"><p class="loading">Loading…</p></div></section>`).join('')}</div>`;
    // On the view's own element: #main outlives the view.
    $('#queues').addEventListener('click', (e) => {
      const b = e.target.closest('[data-action]');
      if (b && S.operator) redrive(b.dataset.queue, b.dataset.action === 'redrive-one' ? [b.dataset.id] : null);
    });
    load();
  };
  v.onLive = (ov) => { if (total !== null && ov.dead_letters !== total) load(); total = ov.dead_letters; };
  return v;
}

// ---------- start ----------
async function start() {
  wireDialog();
  $('#sign-out').addEventListener('click', () => signOut());
  // The skip link must not touch the hash: the hash is the route.
  $('#skip-link').addEventListener('click', (e) => { e.preventDefault(); $('#main').focus(); });
  window.addEventListener('hashchange', () => route(false));
  S.config = await api('/dashboard/config.json', { auth: false }).catch(() => null);
  // Back from Cognito's hosted UI: #access_token=...&id_token=...&token_type=Bearer&expires_in=...
  const h = location.hash;
  if (/(^#|&)(access_token|error)=/.test(h)) {
    const p = new URLSearchParams(h.slice(1));
    if (p.get('access_token')) sessionStorage.setItem(TOKEN_KEY, p.get('access_token'));
    history.replaceState(null, '', `${location.pathname}${location.search}#/overview`);
    if (!p.get('access_token')) return showSignIn(`Sign-in failed: ${p.get('error_description') || p.get('error')}`);
  }
  S.token = sessionStorage.getItem(TOKEN_KEY);
  if (!S.token) return showSignIn();
  enter();
}
start();
