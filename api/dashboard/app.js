// como-saga dashboard: a static single-page app, no framework, no build step.
// Lives with the server's CSP: no inline script or style; every API value goes through esc().
'use strict';
(() => {
  const TOKEN_KEY = 'como-saga-token';
  const STATUSES = ['running', 'waiting_for_downstream', 'reconciling', 'compensating', 'confirmed', 'compensated', 'cancelled', 'needs_operator'];
  const LIVE_STATUSES = ['waiting_for_downstream', 'reconciling', 'needs_operator', 'running', 'compensating'];
  const FINISHED = new Set(['confirmed', 'compensated', 'cancelled']);
  const STEPS = ['check_credits', 'hold_slot', 'redeem_credits', 'book_experience', 'confirm'];
  const QUEUES = {
    requests: 'booking requests, for the orchestrator',
    replies: "workers' replies, for the orchestrator",
    'commands-crm': 'commands for the Memberson worker',
    'commands-sevenrooms': 'commands for the SevenRooms worker',
    notifications: 'needs-operator notifications, for the webhook',
  };
  const DOWNSTREAM_OF_STEP = { check_credits: 'Memberson', hold_slot: 'SevenRooms', redeem_credits: 'Memberson', book_experience: 'SevenRooms' };
  const WORKER_NAME = { crm: 'Memberson', memberson: 'Memberson', sevenrooms: 'SevenRooms' };
  const UNDO = {
    hold_slot: 'release the SevenRooms hold',
    redeem_credits: 'void the Memberson redemption (the credits go back to the member)',
    book_experience: 'cancel the SevenRooms reservation',
  };
  const AUDIT_ACTIONS = ['retry_now', 'force_compensation', 'cancel', 'resolve_confirmed', 'resolve_compensated', 'redrive'];
  const RETRY_KINDS = new Set(['command_sent', 'reply_received', 'timed_out', 'retry_scheduled', 'waiting_for_downstream']);

  const S = { token: null, me: null, config: null, overview: null, offset: 0, view: null, operator: false };
  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));
  const esc = (v) => String(v ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
  const human = (s) => String(s ?? '').replace(/_/g, ' ');
  const now = () => Date.now() + S.offset;
  const pad = (n) => String(n).padStart(2, '0');

  // ---------- formatting ----------
  function clock(d, seconds = true) {
    return `${pad(d.getHours())}:${pad(d.getMinutes())}${seconds ? ':' + pad(d.getSeconds()) : ''}`;
  }
  function localText(d) {
    const today = new Date(now());
    const sameDay = d.getFullYear() === today.getFullYear() && d.getMonth() === today.getMonth() && d.getDate() === today.getDate();
    return sameDay ? clock(d) : `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${clock(d)}`;
  }
  function plainTime(iso) {
    const d = new Date(iso);
    return iso && !isNaN(d) ? localText(d) : String(iso ?? '—');
  }
  function t(iso) {
    if (!iso) return '—';
    const d = new Date(iso);
    if (isNaN(d)) return esc(iso);
    return `<time datetime="${esc(iso)}" title="${esc(d.toISOString())} UTC">${esc(localText(d))}</time>`;
  }
  function dur(ms) {
    if (ms == null || isNaN(ms)) return '—';
    let s = Math.max(0, Math.floor(ms / 1000));
    if (s < 60) return `${s}s`;
    const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
    s %= 60;
    if (d) return `${d}d ${h}h`;
    if (h) return `${h}h ${m}m`;
    return `${m}m ${s}s`;
  }
  const since = (iso) => (iso ? dur(now() - Date.parse(iso)) : '—');
  const badge = (st) => `<span class="badge s-${esc(st)}">${esc(st)}</span>`;
  const sagaLink = (id) => `<a href="#/saga/${encodeURIComponent(id)}" title="${esc(id)}" aria-label="saga ${esc(id)}"><code>${esc(String(id).slice(0, 8))}…</code></a>`;
  const downstreamName = (d) => WORKER_NAME[String(d || '').toLowerCase()] || d;
  const plural = (n, one, many = one + 's') => `${n} ${n === 1 ? one : many}`;
  function toLocalInput(iso) {
    const d = new Date(iso);
    if (!iso || isNaN(d)) return '';
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
  }
  function fromLocalInput(v) {
    const d = new Date(v);
    return v && !isNaN(d) ? d.toISOString() : '';
  }
  function uuid() {
    if (crypto.randomUUID) return crypto.randomUUID();
    const b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 15) | 64; b[8] = (b[8] & 63) | 128;
    const h = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }

  // Replaces a region's HTML only when it changed, keeping keyboard focus on the same control.
  function swap(el, html) {
    if (!el || el.__html === html) return false;
    const a = document.activeElement;
    const keyOf = (n) => n.getAttribute('data-key') || n.getAttribute('href') || n.id || null;
    const key = a && a !== el && el.contains(a) ? keyOf(a) : null;
    el.innerHTML = html;
    el.__html = html;
    if (key) {
      const n = $$('[data-key],[href],[id]', el).find((x) => keyOf(x) === key);
      if (n) n.focus();
    }
    return true;
  }
  let announceTimer = 0;
  function announce(msg) {
    const el = $('#announce');
    el.textContent = '';
    clearTimeout(announceTimer);
    announceTimer = setTimeout(() => { el.textContent = msg; }, 60);
  }
  const errBox = (e, testid = '') => `<p class="error" role="alert"${testid ? ` data-testid="${testid}"` : ''}>${esc(e.message || e)}</p>`;

  // ---------- API ----------
  class ApiError extends Error {
    constructor(status, code, message, field) {
      super(message);
      Object.assign(this, { status, code, field });
    }
  }
  async function api(path, { method = 'GET', body, auth = true } = {}) {
    const headers = { Accept: 'application/json' };
    if (auth) headers.Authorization = `Bearer ${S.token}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let res;
    try {
      res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: 'no-store' });
    } catch (e) {
      throw new ApiError(0, 'network', `Cannot reach the API (${e.message}).`);
    }
    const text = await res.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
    if (!res.ok) {
      const err = (data && data.error) || {};
      const e = new ApiError(res.status, err.code || `http_${res.status}`, err.message || `The API answered ${res.status} ${res.statusText}.`, err.field);
      if (res.status === 401 && auth) signOut(e.message);
      throw e;
    }
    return data;
  }
  const qs = (o) => {
    const p = new URLSearchParams();
    for (const [k, v] of Object.entries(o)) if (v !== '' && v != null && v !== false) p.set(k, v);
    return p.toString();
  };

  // ---------- the live stream: one for the whole app ----------
  const Live = {
    running: false, ctrl: null, timer: 0, delay: 1000, state: 'off',
    start() { if (!this.running) { this.running = true; this.delay = 1000; this.connect(); } },
    stop() {
      this.running = false;
      if (this.ctrl) this.ctrl.abort();
      clearTimeout(this.timer);
      this.set('off');
    },
    set(state) {
      if (state === this.state) return;
      const was = this.state;
      this.state = state;
      const el = $('#live');
      el.dataset.state = state;
      $('#live-text').textContent = { live: 'live', polling: 'live (polling)', reconnecting: 'reconnecting…', off: 'offline' }[state];
      if (state === 'reconnecting' && was === 'live') announce('Live updates interrupted: reconnecting.');
      if (state === 'live' && was === 'reconnecting') announce('Live updates back.');
    },
    again() {
      if (!this.running) return;
      this.set('reconnecting');
      clearTimeout(this.timer);
      this.timer = setTimeout(() => this.connect(), this.delay);
      this.delay = Math.min(this.delay * 2, 10000);
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
        if (res.status === 404) return this.poll(ctrl);
        if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}`);
        this.set('live');
        const reader = res.body.getReader();
        const dec = new TextDecoder();
        let buf = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf = (buf + dec.decode(value, { stream: true })).replace(/\r\n/g, '\n');
          let i;
          while ((i = buf.indexOf('\n\n')) >= 0) {
            const frame = buf.slice(0, i);
            buf = buf.slice(i + 2);
            this.frame(frame);
          }
        }
      } catch (_) {
        if (ctrl.signal.aborted) return;
      }
      if (ctrl.signal.aborted) return;
      this.again();
    },
    frame(text) {
      let event = 'message';
      const data = [];
      for (const line of text.split('\n')) {
        if (!line || line[0] === ':') continue;
        const k = line.indexOf(':');
        const field = k < 0 ? line : line.slice(0, k);
        let val = k < 0 ? '' : line.slice(k + 1);
        if (val[0] === ' ') val = val.slice(1);
        if (field === 'event') event = val;
        else if (field === 'data') data.push(val);
      }
      if (!data.length) return;
      this.delay = 1000;
      if (event === 'overview') {
        let ov;
        try { ov = JSON.parse(data.join('\n')); } catch (_) { return; }
        gotOverview(ov);
      }
    },
    // A server without the stream: the same overview, asked for every 2 s.
    async poll(ctrl) {
      this.set('polling');
      while (this.running && !ctrl.signal.aborted) {
        await new Promise((r) => { this.timer = setTimeout(r, 2000); });
        if (!this.running || ctrl.signal.aborted) return;
        try { gotOverview(await api('/v1/overview')); this.set('polling'); } catch (e) { if (e.status === 401) return; this.set('reconnecting'); }
      }
    },
  };
  function gotOverview(ov) {
    S.overview = ov;
    const at = Date.parse(ov && ov.at);
    if (!isNaN(at)) S.offset = at - Date.now();
    const v = S.view;
    if (v && v.alive && v.onLive) v.onLive(ov);
  }

  // A view's refresh that never overlaps itself: a request while one runs runs once after it.
  function serial(fn) {
    let running = false, again = false;
    const run = async () => {
      if (running) { again = true; return; }
      running = true;
      try { await fn(); } finally {
        running = false;
        if (again) { again = false; run(); }
      }
    };
    return run;
  }

  // ---------- the confirmation dialog ----------
  const Dlg = { onConfirm: null, opener: null, busy: false };
  function openDialog({ title, body, confirmText = 'Confirm', danger = false, onConfirm, setup }) {
    const dlg = $('#dialog');
    $('#dialog-title').textContent = title;
    $('#dialog-body').innerHTML = body;
    const reason = $('#dialog-reason');
    reason.value = '';
    const err = $('#dialog-error');
    err.hidden = true;
    err.textContent = '';
    const ok = $('#dialog-confirm');
    ok.textContent = confirmText;
    ok.disabled = true;
    ok.className = `btn ${danger ? 'primary danger-fill' : 'primary'}`;
    Dlg.onConfirm = onConfirm;
    Dlg.opener = document.activeElement;
    Dlg.busy = false;
    if (setup) setup($('#dialog-body'));
    dlg.showModal();
    reason.focus();
  }
  function wireDialog() {
    const dlg = $('#dialog');
    const reason = $('#dialog-reason');
    const ok = $('#dialog-confirm');
    reason.addEventListener('input', () => { ok.disabled = Dlg.busy || !reason.value.trim(); });
    $('#dialog-back').addEventListener('click', () => dlg.close());
    dlg.addEventListener('cancel', (e) => { if (Dlg.busy) e.preventDefault(); });
    dlg.addEventListener('close', () => {
      const o = Dlg.opener;
      if (o && document.contains(o)) o.focus();
      else { const h = $('main h1'); if (h) h.focus(); }
    });
    $('#dialog-form').addEventListener('submit', async (e) => {
      e.preventDefault();
      const why = reason.value.trim();
      if (!why || Dlg.busy || !Dlg.onConfirm) return;
      Dlg.busy = true;
      ok.disabled = true;
      const label = ok.textContent;
      ok.textContent = 'Working…';
      const err = $('#dialog-error');
      err.hidden = true;
      try {
        await Dlg.onConfirm(why, $('#dialog-body'));
        Dlg.busy = false;
        ok.textContent = label;
        dlg.close();
      } catch (x) {
        Dlg.busy = false;
        ok.textContent = label;
        ok.disabled = false;
        if (x.status === 401) { dlg.close(); return; }
        err.textContent = x.message || String(x);
        err.hidden = false;
        announce(`Refused: ${x.message}`);
      }
    });
  }

  // ---------- sign-in ----------
  function showSignIn(message) {
    S.me = null;
    if (S.view) S.view.alive = false;
    S.view = null;
    $('#nav').hidden = true;
    $('#who').hidden = true;
    $('#readonly').hidden = true;
    document.title = 'Sign in · como-saga';
    const url = S.config && S.config.signin_url;
    $('#main').innerHTML = `<section class="signin panel" aria-labelledby="signin-h">
      <h1 id="signin-h" tabindex="-1">Sign in</h1>
      ${message ? `<p class="error" role="alert" data-testid="signin-error">${esc(message)}</p>` : ''}
      <div id="signin-org">${url ? `<p><a class="btn primary" href="${esc(url)}">Sign in with your organisation (Cognito)</a></p><p class="or">or</p>` : ''}</div>
      <form id="signin-form">
        <label class="field block" for="token-input"><strong>Sign in with a token</strong>
          <textarea id="token-input" name="token" rows="6" autocomplete="off" spellcheck="false" placeholder="eyJhbGciOi…"></textarea>
        </label>
        <p class="note">Paste a bearer token (JWT). It is kept in this browser tab only, until you sign out.</p>
        <div class="buttons"><button type="submit" class="btn primary" id="signin-button">Sign in</button></div>
      </form></section>`;
    $('#signin-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const tok = $('#token-input').value.trim().replace(/^Bearer\s+/i, '');
      if (!tok) { showSignIn('Paste a token first.'); return; }
      S.token = tok;
      sessionStorage.setItem(TOKEN_KEY, tok);
      enter();
    });
    $('#token-input').focus();
  }
  function signOut(message) {
    Live.stop();
    S.token = null;
    S.overview = null;
    sessionStorage.removeItem(TOKEN_KEY);
    const dlg = $('#dialog');
    if (dlg.open) dlg.close();
    showSignIn(message);
  }
  async function enter() {
    $('#main').innerHTML = '<p class="loading">Signing in…</p>';
    let me;
    try {
      me = await api('/v1/me');
    } catch (e) {
      if (e.status !== 401) showSignIn(e.message);
      return;
    }
    S.me = me;
    const roles = Array.isArray(me.roles) ? me.roles : [];
    S.operator = roles.includes('operator');
    $('#who-text').innerHTML = `Signed in as <strong data-testid="whoami">${esc(me.id)}</strong>${roles.map((r) => ` <span class="role" data-testid="role">${esc(r)}</span>`).join('')}`;
    $('#who').hidden = false;
    $('#nav').hidden = false;
    const ro = $('#readonly');
    ro.hidden = S.operator;
    ro.textContent = roles.length > 1 ? `read-only: your roles are ${roles.join(' and ')}` : `read-only: your role is ${roles[0] || 'none'}`;
    ro.dataset.testid = 'read-only';
    Live.start();
    route(true);
  }

  // ---------- routing ----------
  function parseHash() {
    const h = location.hash.replace(/^#/, '') || '/overview';
    const q = h.indexOf('?');
    return { path: q < 0 ? h : h.slice(0, q), params: new URLSearchParams(q < 0 ? '' : h.slice(q + 1)) };
  }
  function setQuery(path, params) {
    const q = params.toString();
    history.replaceState(null, '', `#${path}${q ? '?' + q : ''}`);
  }
  function route(first) {
    if (!S.me) return;
    const { path, params } = parseHash();
    let view, m;
    if (path === '/overview' || path === '/') view = overviewView();
    else if (path === '/stuck') view = stuckView(params);
    else if (path === '/failing') view = failingView(params);
    else if ((m = path.match(/^\/saga\/([^/?]+)$/))) view = sagaView(decodeURIComponent(m[1]));
    else if (path === '/audit') view = auditView(params);
    else if (path === '/bulk') view = bulkView();
    else if (path === '/dead-letters') view = deadLettersView();
    else view = { name: '', title: 'Not found', mount(el) { el.innerHTML = `<h1 tabindex="-1">Not found</h1><p>There is no view at <code>${esc(path)}</code>. <a href="#/overview">Go to the overview</a>.</p>`; } };
    if (S.view) { S.view.alive = false; if (S.view.destroy) S.view.destroy(); }
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
    if (!first) { const h = $('h1', main); if (h) h.focus(); }
  }

  // ---------- filters shared by the lists ----------
  // field: {name, label, type: text|select|datetime|checkbox|checks, options, def}
  function filterHtml(fields, params, id) {
    const parts = fields.map((f) => {
      const v = params.has(f.name) ? params.get(f.name) : (f.def ?? '');
      const fid = `${id}-${f.name}`;
      if (f.type === 'select') {
        return `<label class="field" for="${fid}">${esc(f.label)}<select id="${fid}" name="${f.name}">${f.options.map((o) => {
          const [val, text] = Array.isArray(o) ? o : [o, o || 'any'];
          return `<option value="${esc(val)}"${val === v ? ' selected' : ''}>${esc(text)}</option>`;
        }).join('')}</select></label>`;
      }
      if (f.type === 'checkbox') return `<label class="check"><input type="checkbox" name="${f.name}" id="${fid}"${v === 'true' ? ' checked' : ''}> ${esc(f.label)}</label>`;
      if (f.type === 'checks') {
        const on = v ? v.split(',') : f.options;
        return `<fieldset><legend>${esc(f.label)}</legend>${f.options.map((o) => `<label class="check"><input type="checkbox" name="${f.name}" value="${esc(o)}"${on.includes(o) ? ' checked' : ''}> ${esc(human(o))}</label>`).join('')}</fieldset>`;
      }
      if (f.type === 'datetime') return `<label class="field" for="${fid}">${esc(f.label)}<input type="datetime-local" id="${fid}" name="${f.name}" value="${esc(toLocalInput(v))}"></label>`;
      return `<label class="field" for="${fid}">${esc(f.label)}<input type="text" id="${fid}" name="${f.name}" value="${esc(v)}" autocomplete="off"${f.placeholder ? ` placeholder="${esc(f.placeholder)}"` : ''}></label>`;
    });
    return `<form class="filters" id="${id}" aria-label="Filters">${parts.join('')}
      <div class="buttons"><button type="submit" class="btn primary">Apply</button><button type="reset" class="btn">Reset</button></div></form>`;
  }
  function readFilters(form, fields) {
    const p = new URLSearchParams();
    for (const f of fields) {
      if (f.type === 'checks') {
        const on = $$(`input[name="${f.name}"]`, form).filter((x) => x.checked).map((x) => x.value);
        if (on.length && on.length < f.options.length) p.set(f.name, on.join(','));
      } else if (f.type === 'checkbox') {
        if (form.elements[f.name].checked) p.set(f.name, 'true');
      } else {
        let v = form.elements[f.name].value.trim();
        if (f.type === 'datetime') v = fromLocalInput(v);
        if (v) p.set(f.name, v);
      }
    }
    return p;
  }
  function wireFilters(form, fields, path, onChange) {
    const apply = () => { const p = readFilters(form, fields); setQuery(path, p); onChange(p); };
    form.addEventListener('submit', (e) => { e.preventDefault(); apply(); });
    form.addEventListener('change', (e) => { if (e.target.type !== 'text') apply(); });
    form.addEventListener('reset', (e) => {
      e.preventDefault();
      const p = new URLSearchParams();
      for (const f of fields) if (f.def) p.set(f.name, f.def);
      setQuery(path, p);
      route();
    });
  }

  // ---------- 1. overview ----------
  function chartSvg(series, atIso, kind) {
    const W = 600, H = 150, L = 36, R = 8, T = 10, B = 24;
    const end = Math.floor(Date.parse(atIso) / 60000) * 60000;
    const slots = new Array(60).fill(null);
    for (const b of series) {
      const i = 59 - Math.round((end - Date.parse(b.minute)) / 60000);
      if (i >= 0 && i < 60) slots[i] = b;
    }
    const vals = slots.map((b) => {
      if (!b) return null;
      if (kind === 'started') return b.started || 0;
      return b.finished > 0 ? (100 * (b.compensated || 0)) / b.finished : null;
    });
    const present = vals.filter((v) => v != null);
    let max = Math.max(kind === 'started' ? 1 : 10, ...present);
    if (kind === 'started') max = Math.ceil(max / 5) * 5 || 5; else max = Math.min(100, Math.ceil(max / 10) * 10);
    const pw = (W - L - R) / 60, ph = H - T - B;
    const y = (v) => T + ph - (v / max) * ph;
    let g = `<line class="grid" x1="${L}" x2="${W - R}" y1="${T}" y2="${T}"/><line class="grid" x1="${L}" x2="${W - R}" y1="${y(max / 2)}" y2="${y(max / 2)}"/>`;
    g += `<line class="axis" x1="${L}" x2="${W - R}" y1="${T + ph}" y2="${T + ph}"/>`;
    const unit = kind === 'started' ? '' : '%';
    g += `<text x="${L - 5}" y="${T + 4}" text-anchor="end">${max}${unit}</text><text x="${L - 5}" y="${T + ph + 4}" text-anchor="end">0</text>`;
    for (const [i, anchor] of [[0, 'start'], [30, 'middle'], [59, 'end']]) {
      const d = new Date(end - (59 - i) * 60000);
      g += `<text x="${L + i * pw + (anchor === 'end' ? pw : 0)}" y="${H - 6}" text-anchor="${anchor}">${clock(d, false)}</text>`;
    }
    if (kind === 'started') {
      vals.forEach((v, i) => {
        if (v) g += `<rect class="bar" x="${(L + i * pw + 1).toFixed(1)}" y="${y(v).toFixed(1)}" width="${Math.max(1, pw - 2).toFixed(1)}" height="${(T + ph - y(v)).toFixed(1)}"/>`;
      });
    } else {
      let d = '', open = false;
      vals.forEach((v, i) => {
        const x = (L + i * pw + pw / 2).toFixed(1);
        if (v == null) { open = false; return; }
        d += `${open ? 'L' : 'M'}${x} ${y(v).toFixed(1)} `;
        open = true;
        g += `<circle class="dotp" cx="${x}" cy="${y(v).toFixed(1)}" r="2.2"/>`;
      });
      if (d) g += `<path class="rate" d="${d.trim()}"/>`;
    }
    const last = [];
    for (let i = 59; i >= 0 && last.length < 5; i--) if (slots[i]) last.unshift(vals[i] == null ? 'blank' : kind === 'started' ? String(vals[i]) : `${Math.round(vals[i])}%`);
    const label = kind === 'started'
      ? `Sagas started per minute over the last hour: ${present.reduce((a, b) => a + b, 0)} in all, at most ${Math.max(0, ...present)} in a minute; the last minutes: ${last.join(', ') || 'no data'}.`
      : `Compensation rate per minute (compensated of finished) over the last hour; the last minutes: ${last.join(', ') || 'no data'}.`;
    return `<svg viewBox="0 0 ${W} ${H}" role="img" aria-label="${esc(label)}" focusable="false">${g}</svg>`;
  }

  function overviewView() {
    const v = { name: 'overview', title: 'Overview' };
    let lastNeeds = null;
    v.mount = (el) => {
      el.innerHTML = `<div class="row"><h1 tabindex="-1">Overview</h1><span class="spacer"></span><span class="note" id="ov-at"></span></div><div id="ov"><p class="loading">Loading…</p></div>`;
      if (S.overview) render(S.overview);
      api('/v1/overview').then((ov) => { if (v.alive) { gotOverview(ov); } }).catch((e) => {
        if (v.alive && e.status !== 401 && !S.overview) swap($('#ov'), errBox(e));
      });
    };
    v.onLive = (ov) => render(ov);
    function render(ov) {
      if (!v.alive || !ov) return;
      $('#ov-at').innerHTML = `as of ${t(ov.at)}`;
      const c = ov.counts || {};
      const by = new Map((c.by_status || []).map((x) => [x.status, x.count]));
      const cards = STATUSES.map((s) => {
        const n = by.get(s) || 0;
        const alert = s === 'needs_operator' && n > 0;
        return `<li class="card c-${s}${alert ? ' alert' : ''}" data-status="${s}"><span class="n">${n}</span><span class="l">${esc(human(s))}</span></li>`;
      }).join('') + `<li class="card total"><span class="n">${esc(c.total ?? 0)}</span><span class="l">total</span></li>`;
      const needs = by.get('needs_operator') || 0;
      if (lastNeeds !== null && needs !== lastNeeds) announce(`${plural(needs, 'saga')} waiting for an operator.`);
      lastNeeds = needs;
      const series = ov.series || [];
      const sinceAt = Date.parse(ov.series_since);
      const short = !isNaN(sinceAt) && Date.parse(ov.at) - sinceAt < 3600000;
      const sinceNote = short ? `since ${clock(new Date(sinceAt), false)}` : 'last hour';
      const steps = (c.by_step || []).map((x) => `<tr><td>${badge(x.status)}</td><td><code>${esc(x.step)}</code></td><td class="num">${esc(x.count)}</td></tr>`).join('');
      const circuits = (ov.circuits || []).map((x) => {
        const st = ['closed', 'open'].includes(x.state) ? x.state : 'unknown';
        const text = st === 'closed' ? `<span class="state">closed</span>${x.since ? `<span class="muted">since ${t(x.since)}</span>` : ''}`
          : st === 'open' ? `<span class="state">OPEN</span><span>since ${t(x.since)}, next probe ${t(x.next_probe_at)}</span>`
            : '<span class="state">unknown</span><span class="muted">no worker has reported it</span>';
        return `<li class="circuit ${st}" data-downstream="${esc(x.downstream)}"><span class="name">${esc(downstreamName(x.downstream))}</span>${text}</li>`;
      }).join('');
      const queues = (ov.queues || []).map((q) => `<tr><th scope="row"><code>${esc(q.queue)}</code></th><td class="num">${esc(q.visible)}</td><td class="num">${esc(q.not_visible)}</td><td class="num">${esc(q.dead_letters)}</td><td class="num">${q.oldest_age_seconds == null ? '—' : `<span title="${esc(q.oldest_sent_at || '')}">${dur(q.oldest_age_seconds * 1000)}</span>`}</td></tr>`).join('');
      const dl = ov.dead_letters || 0;
      swap($('#ov'), `
        <section aria-labelledby="h-status"><h2 id="h-status" class="visually-hidden">Sagas by status</h2><ul class="cards" data-testid="status-counts">${cards}</ul></section>
        <div class="grid2">
          <section class="panel chart" aria-labelledby="h-started"><div class="cap"><h2 id="h-started">Sagas started per minute</h2><span>${esc(sinceNote)}</span></div>${chartSvg(series, ov.at, 'started')}</section>
          <section class="panel chart" aria-labelledby="h-comp"><div class="cap"><h2 id="h-comp">Compensation rate per minute</h2><span>${esc(sinceNote)} · blank: none finished</span></div>${chartSvg(series, ov.at, 'rate')}</section>
        </div>
        <div class="grid2">
          <section class="panel" aria-labelledby="h-circ"><h2 id="h-circ">Downstream circuits</h2><ul class="circuits">${circuits || '<li class="note">No circuit reported.</li>'}</ul>
            <h2>Dead letters</h2><div class="bigdl${dl ? ' alert' : ''}"><span class="n">${esc(dl)}</span><a href="#/dead-letters">${dl ? 'Look at the dead letters' : 'Dead letters'}</a></div></section>
          <section class="panel" aria-labelledby="h-steps"><h2 id="h-steps">Sagas in progress, by step</h2><div class="table-wrap"><table><thead><tr><th scope="col">Status</th><th scope="col">Step</th><th scope="col" class="num">Sagas</th></tr></thead><tbody>${steps || '<tr><td colspan="3" class="empty">No saga in progress</td></tr>'}</tbody></table></div></section>
        </div>
        <section class="panel" aria-labelledby="h-q"><h2 id="h-q">Queues</h2><div class="table-wrap"><table><thead><tr><th scope="col">Queue</th><th scope="col" class="num">Waiting</th><th scope="col" class="num">In flight</th><th scope="col" class="num">Dead letters</th><th scope="col" class="num">Oldest message</th></tr></thead><tbody>${queues || '<tr><td colspan="5" class="empty">No queue reported</td></tr>'}</tbody></table></div></section>`);
    }
    return v;
  }

  // ---------- 2. stuck ----------
  function reasonOf(s) {
    const st = s.status || {};
    switch (st.status) {
      case 'needs_operator': return `<strong>${esc(human(st.reason))}</strong>: ${esc(st.detail)}`;
      case 'waiting_for_downstream': return `waiting for ${esc(downstreamName(st.downstream))}${st.compensating ? ' (to undo)' : ''}${st.since ? `, since ${t(st.since)}` : ''}`;
      case 'reconciling': return 'outcome unknown: looking it up';
      case 'running': if (st.retry_at) return `retrying: ${esc(s.last_error || 'failed')}, next attempt ${t(st.retry_at)}`;
      // fall through
      default: return s.last_error ? esc(s.last_error) : 'no change';
    }
  }
  const STUCK_FIELDS = [
    { name: 'older_than', label: 'Unchanged for at least', type: 'select', def: '5m', options: [['0s', 'any time'], ['10s', '10 seconds'], ['1m', '1 minute'], ['5m', '5 minutes'], ['30m', '30 minutes'], ['1h', '1 hour']] },
    { name: 'status', label: 'Status', type: 'checks', options: LIVE_STATUSES },
    { name: 'step', label: 'Step', type: 'select', options: ['', ...STEPS] },
    { name: 'downstream', label: 'Downstream', type: 'select', options: [['', 'any'], ['memberson', 'Memberson'], ['sevenrooms', 'SevenRooms']] },
    { name: 'member', label: 'Member', type: 'text', placeholder: 'M1234567' },
    { name: 'venue', label: 'Venue', type: 'text' },
    { name: 'started_from', label: 'Started from', type: 'datetime' },
    { name: 'started_before', label: 'Started before', type: 'datetime' },
    { name: 'retrying', label: 'Only retrying with errors', type: 'checkbox' },
  ];
  function stuckView(params) {
    const v = { name: 'stuck', title: 'Stuck' };
    let p = params;
    if (!p.has('older_than')) p.set('older_than', '5m');
    let lastCount = null;
    const load = serial(async () => {
      const q = { older_than: p.get('older_than'), status: p.get('status') || '', limit: 100 };
      for (const k of ['member', 'venue', 'step', 'downstream', 'retrying', 'started_from', 'started_before']) q[k] = p.get(k) || '';
      let page;
      try { page = await api(`/v1/stuck?${qs(q)}`); } catch (e) { if (v.alive && e.status !== 401) swap($('#stuck-out'), errBox(e)); return; }
      if (!v.alive) return;
      const items = page.items || [];
      if (items.length !== lastCount) announce(items.length ? `Stuck list: ${plural(items.length, 'saga')}.` : 'Nothing stuck.');
      lastCount = items.length;
      const rows = items.map((s) => `<tr data-saga-id="${esc(s.saga_id)}" data-status="${esc(s.status && s.status.status)}"><td>${sagaLink(s.saga_id)}</td><td>${badge(s.status && s.status.status)}</td><td>${s.step ? `<code>${esc(s.step)}</code>` : '—'}</td><td class="wrap">${reasonOf(s)}</td><td class="nowrap" title="updated ${esc(s.updated_at)}">${since(s.updated_at)}</td><td><code>${esc(s.member_no)}</code></td><td>${esc(s.venue_id)}</td></tr>`).join('');
      swap($('#stuck-out'), `<p class="note">${items.length ? `${plural(items.length, 'saga')}${items.length >= 100 ? ' (the first 100)' : ''}, the longest unchanged first.` : ''}</p>
        <div class="table-wrap"><table data-testid="stuck-table"><caption class="visually-hidden">Stuck sagas</caption><thead><tr><th scope="col">Saga</th><th scope="col">Status</th><th scope="col">Step</th><th scope="col">Why it waits</th><th scope="col">Unchanged for</th><th scope="col">Member</th><th scope="col">Venue</th></tr></thead>
        <tbody>${rows || '<tr><td colspan="7" class="empty" data-testid="empty">Nothing stuck</td></tr>'}</tbody></table></div>`);
    });
    v.mount = (el) => {
      el.innerHTML = `<h1 tabindex="-1">Stuck sagas</h1><p class="note">Sagas not finished and unchanged for a while. The list follows the live updates by itself.</p>
        <section class="panel">${filterHtml(STUCK_FIELDS, p, 'stuck-filters')}</section><section id="stuck-out" aria-label="Results"><p class="loading">Loading…</p></section>`;
      wireFilters($('#stuck-filters'), STUCK_FIELDS, '/stuck', (np) => { p = np; if (!p.has('older_than')) p.set('older_than', '5m'); load(); });
      load();
    };
    v.onLive = () => load();
    return v;
  }

  // ---------- 4. failing ----------
  const FAILING_FIELDS = [
    { name: 'status', label: 'Status', type: 'select', options: ['', ...LIVE_STATUSES] },
    { name: 'step', label: 'Step', type: 'select', options: ['', ...STEPS] },
    { name: 'downstream', label: 'Downstream', type: 'select', options: [['', 'any'], ['memberson', 'Memberson'], ['sevenrooms', 'SevenRooms']] },
    { name: 'member', label: 'Member', type: 'text', placeholder: 'M1234567' },
    { name: 'venue', label: 'Venue', type: 'text' },
    { name: 'started_from', label: 'Started from', type: 'datetime' },
    { name: 'started_before', label: 'Started before', type: 'datetime' },
  ];
  function pagerHtml(prefix, hasPrev, next) {
    return `<div class="pager">${hasPrev ? `<button type="button" class="btn small" data-key="${prefix}-first">First page</button>` : ''}${next ? `<button type="button" class="btn small" data-key="${prefix}-next">Next page</button>` : ''}</div>`;
  }
  function failingView(params) {
    const v = { name: 'failing', title: 'Failing' };
    let p = params;
    let cursors = [];
    let next = null;
    const load = serial(async () => {
      const q = { retrying: 'true', limit: 100, cursor: cursors[cursors.length - 1] || '' };
      for (const f of FAILING_FIELDS) q[f.name] = p.get(f.name) || '';
      let page;
      try { page = await api(`/v1/sagas?${qs(q)}`); } catch (e) { if (v.alive && e.status !== 401) swap($('#failing-out'), errBox(e)); return; }
      if (!v.alive) return;
      const items = page.items || [];
      next = page.next_cursor || null;
      const rows = items.map((s) => {
        const st = s.status || {};
        const nextAt = st.retry_at || s.wake_at;
        return `<tr data-saga-id="${esc(s.saga_id)}"><td>${sagaLink(s.saga_id)}</td><td>${s.step ? `<code>${esc(s.step)}</code>` : '—'}</td><td>${esc(s.command || '—')}${s.downstream ? ` <span class="muted">→ ${esc(downstreamName(s.downstream))}</span>` : ''}</td><td class="num">${esc(s.attempt ?? '—')}</td><td class="wrap">${esc(s.last_error || '—')}</td><td class="nowrap">${t(nextAt)}</td><td class="nowrap" title="started ${esc(s.started_at)}">${since(s.started_at)}</td><td>${badge(st.status)}</td></tr>`;
      }).join('');
      swap($('#failing-out'), `<div class="table-wrap"><table><caption class="visually-hidden">Sagas retrying with errors</caption><thead><tr><th scope="col">Saga</th><th scope="col">Step</th><th scope="col">Command</th><th scope="col" class="num">Attempt</th><th scope="col">Last error</th><th scope="col">Next attempt</th><th scope="col">Age</th><th scope="col">Status</th></tr></thead>
        <tbody>${rows || '<tr><td colspan="8" class="empty">No saga is retrying</td></tr>'}</tbody></table></div>${pagerHtml('failing', cursors.length > 0, next)}`);
    });
    v.mount = (el) => {
      el.innerHTML = `<h1 tabindex="-1">Still running, but failing</h1><p class="note">Live sagas whose current command has failed at least once, with their last error. Follows the live updates.</p>
        <section class="panel">${filterHtml(FAILING_FIELDS, p, 'failing-filters')}</section><section id="failing-out" aria-label="Results"><p class="loading">Loading…</p></section>`;
      wireFilters($('#failing-filters'), FAILING_FIELDS, '/failing', (np) => { p = np; cursors = []; load(); });
      $('#failing-out').addEventListener('click', (e) => {
        const k = e.target.closest('button') && e.target.closest('button').dataset.key;
        if (k === 'failing-next' && next) { cursors.push(next); load(); }
        if (k === 'failing-first') { cursors = []; load(); }
      });
      load();
    };
    v.onLive = () => load();
    return v;
  }

  // ---------- 3. one saga ----------
  function waitingHtml(sg) {
    const st = sg.status || {};
    const w = sg.waiting_on;
    let what, sub = '';
    if (!w) {
      what = FINISHED.has(st.status) ? `Finished: <strong>${esc(st.status)}</strong>. Nothing more to do.` : 'Nothing pending is recorded.';
      if (sg.audit) sub = `Late-effect audit: ${plural(sg.audit.rounds, 'round')} done, ${esc(sg.audit.undone)} undone.`;
    } else if (w.on === 'reply') {
      what = `Waiting for the reply to <strong>${esc(w.command)}</strong> attempt ${esc(w.attempt)} of <code>${esc(w.step)}</code>${w.worker ? ` from ${esc(downstreamName(w.worker))}` : ''}${w.since ? `, sent ${t(w.since)}` : ''}.`;
      sub = `Counted as timed out at ${t(w.timeout_at)}; gives up at ${t(w.deadline)}. Command <code>${esc(w.command_id)}</code>.`;
    } else if (w.on === 'downstream') {
      what = `Waiting for <strong>${esc(downstreamName(w.downstream))}</strong> (unavailable) to do the ${esc(w.command)} of <code>${esc(w.step)}</code>${w.since ? `, since ${t(w.since)}` : ''}.`;
      sub = `Looks again at ${t(w.until)}; gives up at ${t(w.deadline)}.`;
    } else if (w.on === 'timer') {
      what = w.why === 'retry'
        ? `Waiting to retry: attempt ${esc(w.attempt ?? '?')} of the ${esc(w.command || 'action')} of <code>${esc(w.step)}</code> goes out at ${t(w.at)}.`
        : `Waiting for a timer (${esc(w.why)})${w.step ? ` for <code>${esc(w.step)}</code>` : ''} at ${t(w.at)}.`;
      if (w.why === 'audit') sub = 'The saga ended; it looks for late effects of the undone steps then.';
    } else if (w.on === 'operator') {
      what = `Waiting for an operator: <strong>${esc(human(w.reason))}</strong> at <code>${esc(w.step)}</code>.`;
      sub = esc(w.detail);
    } else {
      what = `Waiting on <strong>${esc(w.on)}</strong>: ${Object.entries(w).filter(([k]) => k !== 'on').map(([k, x]) => `${esc(human(k))} ${/_at$|^since$|^until$|^deadline$/.test(k) ? t(x) : esc(typeof x === 'object' ? JSON.stringify(x) : x)}`).join(', ')}.`;
    }
    if (st.status === 'needs_operator' && (!w || w.on !== 'operator')) sub += ` Reason: <strong>${esc(human(st.reason))}</strong>: ${esc(st.detail)}`;
    const step = sg.current_step || st.step;
    return `<div class="head"><span>Status</span>${`<span class="badge s-${esc(st.status)}" data-testid="saga-status">${esc(st.status)}</span>`}${step ? `<span>at step <code>${esc(step)}</code></span>` : ''}${st.attempt ? `<span class="muted">attempt ${esc(st.attempt)}</span>` : ''}</div>
      <p class="what">${what}</p>${sub ? `<p class="sub">${sub}</p>` : ''}`;
  }
  function outputHtml(o) {
    if (!o) return '<span class="muted">—</span>';
    const c = (x) => `<code>${esc(x)}</code>`;
    switch (o.kind) {
      case 'slot_held': return `SevenRooms hold ${c(o.hold_id)}`;
      case 'credits_redeemed': return `Memberson receipt ${c(o.receipt_no)}, transaction ${c(o.transaction_id)}${o.balance != null ? `, balance ${esc(o.balance)}` : ''}`;
      case 'experience_booked': return `SevenRooms reservation ${c(o.reservation_id)}`;
      case 'credits_checked': return `balance ${esc(o.balance)} credits`;
      case 'compensated': return `${o.undone ? 'undone' : 'nothing left to undo'}${o.note ? ` (${esc(o.note)})` : ''}`;
      case 'done': return 'done';
      default: return esc(Object.entries(o).map(([k, x]) => `${k}: ${typeof x === 'object' ? JSON.stringify(x) : x}`).join(', '));
    }
  }
  function attemptsHtml(a) {
    if (!a) return '—';
    const parts = ['action', 'reconcile', 'compensation'].filter((k) => a[k] && a[k].sent).map((k) => `${k} ${esc(a[k].sent)}${a[k].charged !== a[k].sent ? ` <span class="muted">(${esc(a[k].charged)} counted)</span>` : ''}`);
    return parts.join('<br>') || '<span class="muted">none</span>';
  }
  function historyRow(e, i) {
    const details = [];
    if (e.operator) details.push(`<span class="who-op">by ${esc(e.operator)}</span>${e.reason ? `: <span class="why">“${esc(e.reason)}”</span>` : ''}`);
    else if (e.reason) details.push(`<span class="why">“${esc(e.reason)}”</span>`);
    if (e.error) details.push(esc(e.error));
    if (e.detail) details.push(`<span class="muted">${esc(e.detail)}</span>`);
    if (e.scheduled_at) details.push(`next attempt at ${t(e.scheduled_at)}`);
    if (e.until) details.push(`waits until ${t(e.until)}`);
    if (e.not_before) details.push(`not before ${t(e.not_before)}`);
    const outcome = [badge(e.status), e.code ? `<strong>${esc(e.code)}</strong>` : '', e.needs_operator_reason ? `<strong>${esc(human(e.needs_operator_reason))}</strong>` : ''].filter(Boolean).join(' ');
    const cls = e.kind === 'operator_action' || e.operator ? 'op' : ['confirmed', 'compensated', 'cancelled'].includes(e.kind) ? 'final' : '';
    return `<tr${cls ? ` class="${cls}"` : ''} data-kind="${esc(e.kind)}" data-index="${i}"><td class="nowrap">${t(e.at)}</td><td>${esc(human(e.kind))}</td><td>${e.step ? `<code>${esc(e.step)}</code>` : ''}</td><td class="nowrap">${e.command ? esc(e.command) : ''}${e.attempt ? ` #${esc(e.attempt)}` : ''}</td><td>${outcome}</td><td class="wrap">${details.join('<br>')}</td></tr>`;
  }
  // Runs of identical retry cycles (same step, command, error and code) fold to one row.
  function timelineRows(items, base, expanded) {
    const out = [];
    let i = 0;
    const sig = (cyc) => cyc.map((k) => { const x = items[k]; return [x.kind, x.error || '', x.code || '', x.status].join('\u0001'); }).join('\u0002');
    while (i < items.length) {
      const e = items[i];
      if (!RETRY_KINDS.has(e.kind)) { out.push(historyRow(e, base + i)); i++; continue; }
      let j = i;
      while (j < items.length && RETRY_KINDS.has(items[j].kind) && items[j].step === e.step && items[j].command === e.command) j++;
      const cycles = [];
      let cur = null;
      for (let k = i; k < j; k++) {
        if (!cur || items[k].kind === 'command_sent') { cur = []; cycles.push(cur); }
        cur.push(k);
      }
      const rows = (cyc) => cyc.map((k) => historyRow(items[k], base + k)).join('');
      let c = 0;
      while (c < cycles.length) {
        const s = sig(cycles[c]);
        let d = c + 1;
        while (d < cycles.length && sig(cycles[d]) === s) d++;
        if (d - c >= 3) {
          const folded = cycles.slice(c + 1, d - 1);
          const idx = folded.flat();
          const atts = idx.map((k) => items[k].attempt).filter((a) => a != null);
          const key = `fold-${base + idx[0]}`;
          const open = expanded.has(key);
          const range = atts.length ? `attempts ${Math.min(...atts)}–${Math.max(...atts)}` : `entries ${base + idx[0] + 1}–${base + idx[idx.length - 1] + 1}`;
          out.push(rows(cycles[c]));
          out.push(`<tr class="collapsed"><td colspan="6">… ${plural(folded.length, 'more identical attempt')} (${range}) — <button type="button" class="linkish" data-fold="${key}" data-key="${key}" aria-expanded="${open}">${open ? 'Hide' : 'Show'}</button></td></tr>`);
          if (open) out.push(folded.map(rows).join(''));
          out.push(rows(cycles[d - 1]));
        } else {
          out.push(cycles.slice(c, d).map(rows).join(''));
        }
        c = d;
      }
      i = j;
    }
    return out.join('');
  }
  function actionText(action, sg, outcome) {
    const w = sg.waiting_on || {};
    const step = w.step || sg.current_step || (sg.status && sg.status.step) || 'the current step';
    const done = (sg.steps || []).filter((s) => ['applied', 'maybe'].includes(s.effect) && s.state !== 'compensated' && UNDO[s.name]);
    const undoList = done.length
      ? `<ul>${done.map((s) => `<li>${esc(UNDO[s.name])} (<code>${esc(s.name)}</code>${s.effect === 'maybe' ? ', if it took effect' : ''})</li>`).join('')}</ul>`
      : '<p>No step has taken an effect that needs undoing.</p>';
    if (action === 'retry_now') {
      const ds = downstreamName(w.downstream || w.worker) || DOWNSTREAM_OF_STEP[step] || 'its downstream';
      const when = w.on === 'timer' ? w.at : w.on === 'downstream' ? w.until : w.on === 'reply' ? w.timeout_at : sg.next_wake_at;
      const cmd = w.command && w.command !== 'action' ? `the ${esc(w.command)} of ` : '';
      return `<p><strong>Retry now</strong>: sends the next attempt of ${cmd}<code>${esc(step)}</code> to ${esc(ds)} immediately${when ? ` instead of waiting until ${esc(plainTime(when))}` : ''}.</p>`;
    }
    if (action === 'force_compensation') return `<p><strong>Force compensation</strong>: stops going forward and undoes the steps already done:</p>${undoList}<p>The saga then ends <strong>compensated</strong>.</p>`;
    if (action === 'cancel') return `<p><strong>Cancel</strong>: stops this booking for good. The steps already done are undone:</p>${undoList}<p>The saga then ends <strong>cancelled</strong>.</p>`;
    return `<p><strong>Resolve as ${esc(outcome)}</strong>: records that you settled this by hand in the downstream systems; nothing is sent. The saga ends <strong>${esc(outcome)}</strong>.</p>`;
  }
  function sagaView(id) {
    const v = { name: '', title: `Saga ${id.slice(0, 8)}` };
    let sg = null;
    let cursor = 0, followLast = false, total = 0;
    const expanded = new Set();
    let lastStatus = null;
    const loadHistory = async () => {
      if (followLast) cursor = Math.max(0, total - 100);
      let page = await api(`/v1/sagas/${encodeURIComponent(id)}/history?cursor=${cursor}&limit=100`);
      if (followLast && page.total > total && Math.max(0, page.total - 100) !== cursor) {
        total = page.total;
        cursor = Math.max(0, total - 100);
        page = await api(`/v1/sagas/${encodeURIComponent(id)}/history?cursor=${cursor}&limit=100`);
      }
      return page;
    };
    const load = serial(async () => {
      let page;
      try {
        [sg, page] = await Promise.all([api(`/v1/sagas/${encodeURIComponent(id)}`), loadHistory()]);
      } catch (e) {
        if (v.alive && e.status !== 401) swap($('#saga-load-error'), errBox(e));
        return;
      }
      if (!v.alive) return;
      swap($('#saga-load-error'), '');
      render(page);
    });
    function render(page) {
      const st = sg.status || {};
      if (lastStatus && lastStatus !== st.status) announce(`Saga status now ${st.status}.`);
      lastStatus = st.status;
      const box = $('#waiting');
      box.hidden = false;
      box.className = `waiting st-${st.status}`;
      const w = sg.waiting_on;
      box.dataset.status = st.status || '';
      box.dataset.on = w ? w.on : '';
      box.dataset.why = w && w.why ? w.why : '';
      swap(box, waitingHtml(sg));
      // Actions: operators only (absent, not disabled, for anyone else), while it is not finished.
      const acts = $('#actions');
      if (S.operator && !FINISHED.has(st.status)) {
        swap(acts, `<h2 id="h-actions" class="visually-hidden">Actions</h2><div class="actions" role="group" aria-labelledby="h-actions">
          <button type="button" class="btn" data-action="retry_now" data-key="a-retry">Retry now</button>
          <button type="button" class="btn danger" data-action="force_compensation" data-key="a-force">Force compensation</button>
          <button type="button" class="btn danger" data-action="cancel" data-key="a-cancel">Cancel</button>
          <button type="button" class="btn" data-action="resolve" data-key="a-resolve">Resolve…</button></div>`);
      } else swap(acts, S.operator ? '<p class="note">Finished: no action applies.</p>' : '');
      const r = sg.request || {};
      const g = r.guest;
      swap($('#saga-facts'), `<section class="panel" aria-labelledby="h-req"><h2 id="h-req">Booking</h2><dl class="kv">
          <dt>Member</dt><dd><code>${esc(r.member_no)}</code></dd><dt>Venue</dt><dd>${esc(r.venue_id)}</dd>
          <dt>When</dt><dd>${esc(r.date)} ${esc(r.time)}</dd><dt>Party</dt><dd>${esc(r.party_size)}</dd><dt>Credits</dt><dd>${esc(r.credits)}</dd>
          <dt>Guest</dt><dd>${g ? `${esc(g.first_name)} ${esc(g.last_name)}, ${esc(g.phone)}${g.email ? `, ${esc(g.email)}` : ''}` : '<span class="muted">hidden for your role</span>'}</dd>
          <dt>Request id</dt><dd><code>${esc(r.request_id)}</code></dd></dl></section>
        <section class="panel" aria-labelledby="h-time"><h2 id="h-time">Saga</h2><dl class="kv">
          <dt>Id</dt><dd><code>${esc(sg.saga_id)}</code></dd><dt>Definition</dt><dd>${esc(sg.definition)} v${esc(sg.definition_version)}</dd>
          <dt>Started</dt><dd>${t(sg.started_at)}</dd><dt>Updated</dt><dd>${t(sg.updated_at)} <span class="muted">(${since(sg.updated_at)} ago)</span></dd>
          <dt>Deadline</dt><dd>${t(sg.deadline)}</dd>${sg.compensation_deadline ? `<dt>Compensation deadline</dt><dd>${t(sg.compensation_deadline)}</dd>` : ''}
          <dt>Next wake-up</dt><dd>${t(sg.next_wake_at)}</dd><dt>Version</dt><dd>${esc(sg.transitions)}</dd>
          ${sg.audit ? `<dt>Late-effect audit</dt><dd>${plural(sg.audit.rounds, 'round')}, ${esc(sg.audit.undone)} undone${sg.audit.checking ? `, checking <code>${esc(sg.audit.checking)}</code>` : ''}</dd>` : ''}</dl></section>`);
      const steps = (sg.steps || []).map((s) => `<tr${s.name === sg.current_step ? ' class="op"' : ''}><th scope="row"><code>${esc(s.name)}</code></th><td>${esc(human(s.state))}</td><td class="eff-${esc(s.effect)}">${esc(human(s.effect))}</td><td>${attemptsHtml(s.attempts)}</td><td class="wrap">${esc(s.last_error || '')}</td><td>${outputHtml(s.output)}</td></tr>`).join('');
      swap($('#saga-steps'), `<table><caption class="visually-hidden">Steps</caption><thead><tr><th scope="col">Step</th><th scope="col">State</th><th scope="col">Effect</th><th scope="col">Attempts</th><th scope="col">Last error</th><th scope="col">What the downstreams hold for it</th></tr></thead><tbody>${steps}</tbody></table>`);
      total = page.total || 0;
      const items = page.items || [];
      const a = items.length ? cursor + 1 : 0, b = cursor + items.length;
      const hasPrev = cursor > 0, hasNext = !!page.next_cursor;
      swap($('#timeline'), `<div class="table-wrap"><table><caption class="visually-hidden">History, entries ${a} to ${b} of ${total}</caption><thead><tr><th scope="col">Time</th><th scope="col">Event</th><th scope="col">Step</th><th scope="col">Command</th><th scope="col">Outcome</th><th scope="col">Details</th></tr></thead>
        <tbody>${timelineRows(items, cursor, expanded) || '<tr><td colspan="6" class="empty">No entry</td></tr>'}</tbody></table></div>
        <div class="pager"><span>entries ${a}–${b} of ${total}</span>
        ${total > 100 ? `<button type="button" class="btn small" data-page="first" data-key="p-first"${hasPrev ? '' : ' disabled'}>First</button><button type="button" class="btn small" data-page="prev" data-key="p-prev"${hasPrev ? '' : ' disabled'}>Previous</button><button type="button" class="btn small" data-page="next" data-key="p-next"${hasNext ? '' : ' disabled'}>Next</button><button type="button" class="btn small" data-page="last" data-key="p-last"${hasNext ? '' : ' disabled'}>Last</button>` : ''}</div>`);
    }
    function act(action) {
      const outcomeChoice = action === 'resolve';
      const initial = outcomeChoice ? 'confirmed' : null;
      const actionId = uuid();
      const names = { retry_now: 'Retry now', force_compensation: 'Force compensation', cancel: 'Cancel the booking', resolve: 'Resolve by hand' };
      openDialog({
        title: `${names[action]}?`,
        body: `${outcomeChoice ? `<fieldset><legend>Outcome you settled by hand</legend><label class="check"><input type="radio" name="outcome" value="confirmed" checked> confirmed</label><label class="check"><input type="radio" name="outcome" value="compensated"> compensated</label></fieldset>` : ''}
          <div id="dialog-text">${actionText(action, sg, initial)}</div><p class="note">Saga <code>${esc(id)}</code>.</p>`,
        confirmText: 'Confirm',
        setup: (body) => {
          for (const r of $$('input[name=outcome]', body)) r.addEventListener('change', () => { $('#dialog-text').innerHTML = actionText(action, sg, r.value); });
        },
        onConfirm: async (reason, body) => {
          const req = { action, reason, action_id: actionId };
          if (outcomeChoice) req.outcome = ($('input[name=outcome]:checked', body) || {}).value || 'confirmed';
          const res = await api(`/v1/sagas/${encodeURIComponent(id)}/actions`, { method: 'POST', body: req });
          if (!v.alive) return;
          const msg = res.repeated ? `Already applied: status ${res.status} (version ${res.version})` : `Done: status now ${res.status} (version ${res.version})`;
          $('#action-result-area').innerHTML = `<p class="success" role="status" data-testid="action-result" data-status="${esc(res.status)}"><strong>${esc(human(res.action))}</strong> — ${esc(msg)}. Action id <code>${esc(res.action_id)}</code>.</p>`;
          announce(msg);
          load();
        },
      });
    }
    v.mount = (el) => {
      el.innerHTML = `<nav aria-label="Breadcrumb" class="note"><a href="#/stuck">Stuck</a> · <a href="#/failing">Failing</a></nav>
        <h1 tabindex="-1">Saga <code>${esc(id)}</code></h1><div id="saga-load-error"></div>
        <section class="waiting" id="waiting" data-testid="waiting-on" aria-label="What it waits on now" hidden></section>
        <div id="actions"></div><div id="action-result-area" aria-live="polite"></div>
        <div class="grid2" id="saga-facts"></div>
        <section aria-labelledby="h-steps"><h2 id="h-steps">Steps</h2><div class="table-wrap" id="saga-steps"></div></section>
        <section aria-labelledby="h-tl"><h2 id="h-tl">Timeline</h2><div id="timeline" data-testid="timeline"><p class="loading">Loading…</p></div></section>`;
      $('#actions').addEventListener('click', (e) => {
        const b = e.target.closest('[data-action]');
        if (b && sg && S.operator) act(b.dataset.action);
      });
      $('#timeline').addEventListener('click', (e) => {
        const b = e.target.closest('button');
        if (!b) return;
        if (b.dataset.fold) {
          if (expanded.has(b.dataset.fold)) expanded.delete(b.dataset.fold); else expanded.add(b.dataset.fold);
          load();
          return;
        }
        const pg = b.dataset.page;
        if (!pg) return;
        followLast = pg === 'last';
        if (pg === 'first') cursor = 0;
        if (pg === 'prev') cursor = Math.max(0, cursor - 100);
        if (pg === 'next') cursor += 100;
        if (pg === 'last') cursor = Math.max(0, total - 100);
        load();
      });
      load();
    };
    v.onLive = () => { if (sg && !FINISHED.has(sg.status && sg.status.status)) load(); };
    return v;
  }

  // ---------- 5a. audit ----------
  const AUDIT_FIELDS = [
    { name: 'actor', label: 'Who', type: 'text', placeholder: 'ops-alice' },
    { name: 'action', label: 'Action', type: 'select', options: ['', ...AUDIT_ACTIONS] },
    { name: 'from', label: 'From', type: 'datetime' },
    { name: 'until', label: 'Until', type: 'datetime' },
  ];
  function targetHtml(target) {
    const m = /^(?:saga\/)?([0-9a-fA-F-]{36})$/.exec(target || '');
    if (m) return sagaLink(m[1]);
    if (/^dead-letters\//.test(target || '')) return `<a href="#/dead-letters">${esc(target)}</a>`;
    return esc(target);
  }
  function auditView(params) {
    const v = { name: 'audit', title: 'Audit' };
    let p = params, cursors = [], next = null;
    const load = serial(async () => {
      const q = { limit: 50, cursor: cursors[cursors.length - 1] || '' };
      for (const f of AUDIT_FIELDS) q[f.name] = p.get(f.name) || '';
      let page;
      try { page = await api(`/v1/audit?${qs(q)}`); } catch (e) { if (v.alive && e.status !== 401) swap($('#audit-out'), errBox(e)); return; }
      if (!v.alive) return;
      next = page.next_cursor || null;
      const oc = { applied: 's-confirmed', repeated: 's-compensated', pending: 's-reconciling', refused: 's-needs_operator', failed: 's-needs_operator' };
      const rows = (page.items || []).map((x) => `<tr><td class="nowrap">${t(x.at)}</td><td>${esc(x.actor)}</td><td>${esc(human(x.action))}</td><td>${targetHtml(x.target)}</td><td class="wrap why">${esc(x.reason)}</td><td><span class="badge ${oc[x.outcome] || ''}"${x.finished_at ? ` title="finished ${esc(x.finished_at)}"` : ''}>${esc(x.outcome)}</span></td><td class="wrap">${esc(x.detail || '')}${x.action_id ? `<br><span class="muted">action <code>${esc(x.action_id)}</code></span>` : ''}</td></tr>`).join('');
      swap($('#audit-out'), `<div class="table-wrap"><table><caption class="visually-hidden">Operator actions, newest first</caption><thead><tr><th scope="col">When</th><th scope="col">Who</th><th scope="col">What</th><th scope="col">Target</th><th scope="col">Why</th><th scope="col">Outcome</th><th scope="col">Detail</th></tr></thead>
        <tbody>${rows || '<tr><td colspan="7" class="empty">No operator action</td></tr>'}</tbody></table></div>${pagerHtml('audit', cursors.length > 0, next)}`);
    });
    v.mount = (el) => {
      el.innerHTML = `<h1 tabindex="-1">Audit</h1><p class="note">Every operator action (single, bulk, redrive): who, what, why and how it ended, newest first.</p>
        <section class="panel">${filterHtml(AUDIT_FIELDS, p, 'audit-filters')}</section><section id="audit-out" aria-label="Results"><p class="loading">Loading…</p></section>`;
      wireFilters($('#audit-filters'), AUDIT_FIELDS, '/audit', (np) => { p = np; cursors = []; load(); });
      $('#audit-out').addEventListener('click', (e) => {
        const k = e.target.closest('button') && e.target.closest('button').dataset.key;
        if (k === 'audit-next' && next) { cursors.push(next); load(); }
        if (k === 'audit-first') { cursors = []; load(); }
      });
      load();
    };
    v.onLive = () => { if (!cursors.length) load(); };
    return v;
  }

  // ---------- 5b. bulk ----------
  const BULK_FIELDS = [
    { name: 'status', label: 'Status', type: 'select', options: ['', ...LIVE_STATUSES] },
    { name: 'step', label: 'Step', type: 'select', options: ['', ...STEPS] },
    { name: 'older_than', label: 'Unchanged for at least', type: 'select', options: [['', 'any time'], ['10s', '10 seconds'], ['1m', '1 minute'], ['5m', '5 minutes'], ['30m', '30 minutes'], ['1h', '1 hour']] },
    { name: 'downstream', label: 'Downstream', type: 'select', options: [['', 'any'], ['memberson', 'Memberson'], ['sevenrooms', 'SevenRooms']] },
    { name: 'member', label: 'Member', type: 'text' },
    { name: 'venue', label: 'Venue', type: 'text' },
    { name: 'started_from', label: 'Started from', type: 'datetime' },
    { name: 'started_before', label: 'Started before', type: 'datetime' },
    { name: 'retrying', label: 'Only retrying with errors', type: 'checkbox' },
  ];
  function bulkView() {
    const v = { name: 'bulk', title: 'Bulk actions' };
    let preview = null;
    v.mount = (el) => {
      if (!S.operator) {
        el.innerHTML = `<h1 tabindex="-1">Bulk actions</h1><section class="panel"><p>Bulk actions retry, or force the compensation of, many sagas at once: first a dry run lists exactly the sagas it would act on, then it acts on exactly those, each result read back.</p>
          <p><strong>This page is read-only for you</strong>: it needs the operator role (${esc(S.me.roles.join(', ') || 'no role')}). See the <a href="#/failing">failing</a> and <a href="#/stuck">stuck</a> lists, or the <a href="#/audit">audit</a> of what operators did.</p></section>`;
        return;
      }
      el.innerHTML = `<h1 tabindex="-1">Bulk actions</h1><p class="note">Step 1: a dry run lists exactly the sagas the action would act on (nothing changes). Step 2: execute on exactly that list.</p>
        <section class="panel"><form id="bulk-form" class="filters" aria-label="Bulk action">
          <fieldset><legend>Action</legend><label class="check"><input type="radio" name="action" value="retry_now" checked> retry now</label><label class="check"><input type="radio" name="action" value="force_compensation"> force compensation</label></fieldset>
          ${filterHtml(BULK_FIELDS, new URLSearchParams(), 'bulk-filters').replace(/^<form[^>]*>/, '').replace(/<div class="buttons">[\s\S]*<\/form>$/, '')}
          <div class="buttons"><button type="submit" class="btn primary" data-action="bulk-preview">Preview (dry run)</button></div></form></section>
        <section id="bulk-out" aria-live="polite"></section>`;
      const form = $('#bulk-form');
      form.addEventListener('input', () => { if (preview) { preview = null; $('#bulk-out').innerHTML = '<p class="note">The filters changed: preview again.</p>'; } });
      form.addEventListener('submit', async (e) => {
        e.preventDefault();
        const p = readFilters(form, BULK_FIELDS);
        const body = { action: form.elements.action.value };
        for (const [k, x] of p) body[k] = k === 'retrying' ? true : x;
        const out = $('#bulk-out');
        out.innerHTML = '<p class="loading">Previewing…</p>';
        try { preview = await api('/v1/bulk/preview', { method: 'POST', body }); } catch (x) { if (x.status !== 401) out.innerHTML = errBox(x); return; }
        renderPreview();
      });
      $('#bulk-out').addEventListener('click', (e) => { if (e.target.closest('[data-action="bulk-execute"]') && preview) execute(); });
    };
    function renderPreview() {
      const n = preview.sagas.length;
      const rows = preview.sagas.map((s) => `<tr data-saga-id="${esc(s.saga_id)}"><td>${sagaLink(s.saga_id)}</td><td>${badge(s.status)}</td><td>${s.step ? `<code>${esc(s.step)}</code>` : '—'}</td><td>${t(s.updated_at)}</td><td class="num">${esc(s.version)}</td></tr>`).join('');
      $('#bulk-out').innerHTML = `<section class="panel"><h2>Dry run: ${esc(human(preview.action))} would act on exactly ${plural(n, 'saga')}</h2>
        <p class="note">This list is fixed: executing acts on these sagas only, never on a new search. Valid until ${t(preview.expires_at)}.</p>
        <div class="table-wrap"><table><thead><tr><th scope="col">Saga</th><th scope="col">Status</th><th scope="col">Step</th><th scope="col">Updated</th><th scope="col" class="num">Version</th></tr></thead><tbody>${rows || '<tr><td colspan="5" class="empty">No saga matches</td></tr>'}</tbody></table></div>
        ${n ? `<div class="buttons"><button type="button" class="btn primary" data-action="bulk-execute">Execute on exactly these ${plural(n, 'saga')}</button></div>` : ''}</section>`;
      announce(`Dry run: ${plural(n, 'saga')}.`);
    }
    function execute() {
      const n = preview.sagas.length;
      const what = preview.action === 'retry_now' ? 'sends the next attempt of each saga\'s current step immediately' : 'stops each saga going forward and undoes the steps it already did';
      openDialog({
        title: `${human(preview.action)} on ${plural(n, 'saga')}?`,
        body: `<p><strong>${esc(human(preview.action))}</strong> ${what}, for exactly the ${plural(n, 'saga')} of the dry run, at most 20 a second (about ${Math.ceil(n / 20)} s). Each result is read back.</p>`,
        onConfirm: async (reason) => {
          const res = await api('/v1/bulk/execute', { method: 'POST', body: { preview_token: preview.preview_token, reason } });
          const counts = {};
          for (const r of res.results) counts[r.result] = (counts[r.result] || 0) + 1;
          const rows = res.results.map((r) => `<tr data-saga-id="${esc(r.saga_id)}"><td>${sagaLink(r.saga_id)}</td><td>${esc(r.result)}</td><td>${r.status_after ? badge(r.status_after) : '—'}</td><td class="wrap">${esc(r.message || '')}</td></tr>`).join('');
          $('#bulk-out').innerHTML = `<section class="panel" data-testid="bulk-result"><h2>Executed: ${esc(Object.entries(counts).map(([k, c]) => `${c} ${k}`).join(', ') || 'nothing')}</h2><p class="note">Action id <code>${esc(res.action_id)}</code> (the same for every saga of this preview).</p>
            <div class="table-wrap"><table><thead><tr><th scope="col">Saga</th><th scope="col">Result</th><th scope="col">Status after</th><th scope="col">Message</th></tr></thead><tbody>${rows}</tbody></table></div></section>`;
          preview = null;
          announce(`Bulk action done: ${res.results.length} sagas.`);
        },
      });
    }
    return v;
  }

  // ---------- 5c. dead letters ----------
  function deadLettersView() {
    const v = { name: 'dead-letters', title: 'Dead letters' };
    let lastTotal = null;
    const results = {};
    const loadQueue = async (q) => {
      let html;
      try {
        const d = await api(`/v1/dead-letters?queue=${encodeURIComponent(q)}&limit=100`);
        const items = d.items || [];
        const rows = items.map((x) => `<tr><td><code>${esc(x.message_id)}</code></td><td class="nowrap">${t(x.dead_lettered_at)}</td><td class="num">${esc(x.receive_count)}</td><td class="wrap">${esc(x.reason)}</td><td><details><summary>${esc(String(x.body).slice(0, 60))}${String(x.body).length > 60 ? '…' : ''}</summary><pre class="wrap mono">${esc(x.body)}</pre></details></td>${S.operator ? `<td><button type="button" class="btn small" data-action="redrive-one" data-queue="${esc(q)}" data-id="${esc(x.message_id)}" data-key="r-${esc(x.message_id)}">Redrive</button></td>` : ''}</tr>`).join('');
        html = `<p class="row"><span>${plural(items.length, 'dead letter')}${items.length >= 100 ? ' (the first 100)' : ''}</span>${S.operator && items.length ? `<button type="button" class="btn small" data-action="redrive" data-queue="${esc(q)}" data-count="${items.length}" data-key="ra-${esc(q)}">Redrive all</button>` : ''}</p>
          ${items.length ? `<div class="table-wrap"><table><thead><tr><th scope="col">Message</th><th scope="col">Dead-lettered</th><th scope="col" class="num">Receives</th><th scope="col">Why</th><th scope="col">Body</th>${S.operator ? '<th scope="col"><span class="visually-hidden">Action</span></th>' : ''}</tr></thead><tbody>${rows}</tbody></table></div>` : ''}`;
      } catch (e) {
        if (e.status === 401) return;
        html = errBox(e);
      }
      if (v.alive) swap($(`#dl-${q}`), html + (results[q] || ''));
    };
    const loadAll = serial(() => Promise.all(Object.keys(QUEUES).map(loadQueue)));
    function redrive(queue, ids) {
      const n = ids ? ids.length : null;
      openDialog({
        title: `Redrive ${n ? plural(n, 'message') : 'all dead letters'} of ${queue}?`,
        body: `<p><strong>Redrive</strong>: puts ${n ? `the dead letter <code>${esc(ids[0])}</code>` : 'every dead letter'} of <code>${esc(queue)}</code> back on its queue, where it is processed again as if new. Do it once the cause is fixed.</p>`,
        onConfirm: async (reason) => {
          const body = { queue, reason };
          if (ids) body.message_ids = ids;
          const res = await api('/v1/dead-letters/redrive', { method: 'POST', body });
          results[queue] = `<p class="success" role="status" data-testid="redrive-result">Redriven: ${plural(res.redriven, 'message')} back on ${esc(res.queue)}.</p>`;
          announce(`Redriven ${res.redriven} from ${res.queue}.`);
          loadAll();
        },
      });
    }
    v.mount = (el) => {
      el.innerHTML = `<h1 tabindex="-1">Dead letters</h1><p class="note">Messages set aside after failing too often, by queue.${S.operator ? '' : ' Read-only for your role.'}</p>
        ${Object.entries(QUEUES).map(([q, d]) => `<section class="panel" aria-labelledby="h-${q}"><h2 id="h-${q}"><code>${esc(q)}</code> <span class="muted">— ${esc(d)}</span></h2><div id="dl-${q}"><p class="loading">Loading…</p></div></section>`).join('')}`;
      el.addEventListener('click', (e) => {
        const b = e.target.closest('[data-action]');
        if (!b || !S.operator) return;
        if (b.dataset.action === 'redrive') redrive(b.dataset.queue, null);
        if (b.dataset.action === 'redrive-one') redrive(b.dataset.queue, [b.dataset.id]);
      });
      loadAll();
    };
    v.onLive = (ov) => {
      if (lastTotal !== null && ov.dead_letters !== lastTotal) loadAll();
      lastTotal = ov.dead_letters;
    };
    return v;
  }

  // ---------- start ----------
  async function start() {
    wireDialog();
    $('#sign-out').addEventListener('click', () => signOut('You signed out.'));
    window.addEventListener('hashchange', () => route(false));
    const h = location.hash;
    if (/(^#|&)(access_token|error)=/.test(h)) {
      const p = new URLSearchParams(h.slice(1));
      const tok = p.get('access_token');
      if (tok) sessionStorage.setItem(TOKEN_KEY, tok);
      history.replaceState(null, '', `${location.pathname}${location.search}#/overview`);
      if (!tok) { S.config = await api('/dashboard/config.json', { auth: false }).catch(() => null); showSignIn(`Sign-in failed: ${p.get('error_description') || p.get('error')}`); return; }
    }
    const config = api('/dashboard/config.json', { auth: false }).then((c) => { S.config = c; }).catch(() => { S.config = null; });
    S.token = sessionStorage.getItem(TOKEN_KEY);
    if (!S.token) { await config; showSignIn(); return; }
    config.then(() => { if (!S.me && !S.token) showSignIn(); });
    enter();
  }
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
