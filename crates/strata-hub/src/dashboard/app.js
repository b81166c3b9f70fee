// The Strata dashboard: a page per view (fleet, device, models, rollouts,
// drift and KPIs, alerts, control, audit), routed on the URL's hash. Each
// view builds its frame once and refreshes its data every two seconds from
// the hub's REST API, so values change without a reload. No build step:
// this file is served as written.
'use strict';

const REFRESH_MS = 2000;
const PAGE_SIZE = 50;
const CHART_WINDOW_S = 300;

// ---------------------------------------------------------------- helpers

/** An element: h('td', {class: 'num'}, 'text', child, ...). */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** A table with a header row and one row per item. */
function table(headers, rows, empty) {
  if (!rows.length) return h('p', { class: 'muted' }, empty || 'Nothing yet.');
  return h('div', { class: 'scroll' }, h('table', {},
    h('thead', {}, h('tr', {}, headers.map(t =>
      h('th', { class: t.endsWith('#') ? 'num' : null }, t.replace(/#$/, ''))))),
    h('tbody', {}, rows)));
}

const num = (v, digits = 2) => (v === null || v === undefined || Number.isNaN(v)) ? '–'
  : Math.abs(v) >= 1000 ? Math.round(v).toLocaleString() : Number(v).toFixed(digits);
const pct = v => (v === null || v === undefined) ? '–' : (v * 100).toFixed(1) + ' %';
const time = ns => ns ? new Date(ns / 1e6).toLocaleString() : '–';
function ago(ns) {
  if (!ns) return 'never';
  const s = Math.max(0, (Date.now() - ns / 1e6) / 1000);
  if (s < 60) return Math.round(s) + ' s ago';
  if (s < 3600) return Math.round(s / 60) + ' min ago';
  if (s < 86400) return Math.round(s / 3600) + ' h ago';
  return Math.round(s / 86400) + ' d ago';
}
const pill = (text, kind) => h('span', { class: 'pill ' + (kind || '') }, text);
const td = (v, cls) => h('td', { class: cls }, v);
const tdn = v => h('td', { class: 'num' }, v);
const link = (href, text) => h('a', { href }, text);
const deviceLink = id => link('#/device/' + encodeURIComponent(id), id);
const enc = encodeURIComponent;

function deviceStatus(d) {
  if (d.state === 'revoked') return pill('revoked', 'bad');
  if (d.state === 'pending') return pill('pending', 'warn');
  return d.online ? pill('online', 'ok') : pill('offline', 'bad');
}
const severityPill = s => pill(s, s === 'critical' ? 'bad' : s === 'warning' ? 'warn' : '');
const alertStatePill = s => pill(s, s === 'active' ? 'bad' : s === 'acknowledged' ? 'warn' : 'ok');

// ---------------------------------------------------------------- API

const auth = {
  get token() { return localStorage.getItem('strata.token'); },
  set token(t) { t ? localStorage.setItem('strata.token', t) : localStorage.removeItem('strata.token'); },
  /** Who the token is (GET /whoami): name, role, permissions, token_id. */
  me: null,
  /** Whether the signed-in token has permission `p` (the hub checks again). */
  can(p) { return !!(this.me && this.me.permissions.includes(p)); },
  /** The shared bootstrap token is nobody in particular: it names who acts. */
  get shared() { return !!(this.me && this.me.name === 'admin' && !this.me.token_id); },
};

class Unauthorized extends Error {}

/** Calls the hub's API; throws with the hub's own error message. */
async function api(path, options = {}) {
  const res = await fetch('/api/v1' + path, {
    ...options,
    headers: { Authorization: 'Bearer ' + auth.token, 'Content-Type': 'application/json' },
    // A hub that never answers fails the refresh (the page says stale)
    // instead of stopping every later one.
    signal: AbortSignal.timeout(20000),
  });
  if (res.status === 401) throw new Unauthorized('the token was refused');
  const text = await res.text();
  const body = text ? JSON.parse(text) : null;
  if (!res.ok) {
    const e = new Error((body && body.error && body.error.message) || res.status + ' ' + res.statusText);
    e.status = res.status;
    throw e;
  }
  return body;
}

/** Calls the API, answering `fallback` where the hub does not have it (404). */
async function apiOr(path, fallback) {
  try { return await api(path); } catch (e) {
    if (e.status === 404) return fallback;
    throw e;
  }
}

// ---------------------------------------------------------------- views

/** Each view: build(root, args) once, then refresh() every REFRESH_MS. */
const views = {};

views.fleet = {
  build(root) {
    // Kept on the view itself, so the filter outlasts a visit elsewhere.
    views.fleet.query = views.fleet.query || { q: '', site: '', status: '', offset: 0 };
    this.stats = h('div', { class: 'stats' });
    this.sites = h('div');
    this.versions = h('div');
    this.devices = h('div');
    this.pageInfo = h('span', { class: 'muted' });
    const q = this.query;
    const search = h('input', { type: 'search', placeholder: 'Search device id', value: q.q, 'aria-label': 'Search devices',
      oninput: e => { q.q = e.target.value; q.offset = 0; this.refresh(); } });
    this.siteSelect = h('select', { 'aria-label': 'Site', onchange: e => { q.site = e.target.value; q.offset = 0; this.refresh(); } },
      h('option', { value: '' }, 'All sites'));
    const status = h('select', { 'aria-label': 'Status', onchange: e => { q.status = e.target.value; q.offset = 0; this.refresh(); } },
      ['', 'online', 'offline', 'pending', 'revoked'].map(s => h('option', { value: s, selected: s === q.status }, s || 'Any status')));
    const prev = h('button', { class: 'secondary', onclick: () => { q.offset = Math.max(0, q.offset - PAGE_SIZE); this.refresh(); } }, '‹ Prev');
    const next = h('button', { class: 'secondary', onclick: () => { if (q.offset + PAGE_SIZE < this.matching) { q.offset += PAGE_SIZE; this.refresh(); } } }, 'Next ›');
    root.append(
      h('h1', {}, 'Fleet'), this.stats,
      h('div', { class: 'grid' },
        h('section', { class: 'card' }, h('h2', {}, 'Sites'), this.sites),
        h('section', { class: 'card' }, h('h2', {}, 'Versions'), this.versions)),
      h('section', { class: 'card' }, h('h2', {}, 'Devices'),
        h('div', { class: 'toolbar' }, search, this.siteSelect, status, prev, next, this.pageInfo),
        this.devices));
  },
  async refresh() {
    const q = this.query;
    const params = new URLSearchParams({ offset: q.offset, limit: PAGE_SIZE });
    if (q.q) params.set('q', q.q);
    if (q.site) params.set('site', q.site);
    if (q.status) params.set('status', q.status);
    const [f, kpis, gates] = await Promise.all([
      api('/fleet?' + params), apiOr('/kpis', null), apiOr('/control/gates', [])]);
    this.matching = f.matching;
    // Devices removed since the page was chosen: back to the last page.
    if (!f.page.length && f.matching && q.offset > 0) {
      q.offset = Math.floor((f.matching - 1) / PAGE_SIZE) * PAGE_SIZE;
      return this.refresh();
    }
    const fleetKpi = kpis && kpis.fleet;
    this.stats.replaceChildren(...[
      ['devices', f.devices.toLocaleString()], ['online', f.online.toLocaleString()],
      ['offline', f.offline.toLocaleString()], ['pending', f.pending], ['revoked', f.revoked],
      ['fleet uptime', fleetKpi ? pct(fleetKpi.uptime) : '–'], ['open alerts', f.open_alerts],
    ].map(([k, v]) => h('div', { class: 'stat', 'data-stat': k }, h('div', { class: 'v' }, v), h('div', { class: 'k' }, k))));
    const gateBySite = Object.fromEntries(gates.map(g => [g.site, g]));
    this.sites.replaceChildren(table(['Site', 'Region', 'Devices#', 'Online#', 'Uptime#', 'Freshness p50#', 'Phase', 'Gate'],
      f.sites.map(s => {
        const k = kpis && kpis.sites && kpis.sites[s.id];
        const g = gateBySite[s.id];
        return h('tr', {}, td(h('span', {}, s.name, ' ', h('code', { class: 'muted' }, s.id))), td(s.region),
          tdn(s.devices.toLocaleString()), tdn(s.online.toLocaleString()), tdn(k ? pct(k.uptime) : '–'),
          tdn(k && k.freshness_p50_s !== null ? num(k.freshness_p50_s, 1) + ' s' : '–'),
          td(g ? String(g.phase) : '1'),
          td(g ? link('#/control', g.open ? pill('open', 'ok') : pill('closed', 'bad')) : h('span', { class: 'muted' }, 'no gate')));
      }), 'No sites yet.'));
    if (this.siteSelect.options.length !== f.sites.length + 1) {
      this.siteSelect.replaceChildren(h('option', { value: '' }, 'All sites'),
        ...f.sites.map(s => h('option', { value: s.id, selected: s.id === q.site }, s.name)));
    }
    const versionRows = (title, counts) => Object.entries(counts).sort((a, b) => b[1] - a[1])
      .map(([v, n]) => h('tr', {}, td(title), td(h('code', {}, v)), tdn(n.toLocaleString())));
    this.versions.replaceChildren(table(['Kind', 'Version', 'Devices#'],
      [...versionRows('firmware', f.firmware_versions), ...versionRows('model', f.model_versions)]));
    this.devices.replaceChildren(table(['Device', 'Site', 'Status', 'Firmware', 'Model', 'Last seen', 'Tags'],
      f.page.map(d => h('tr', { 'data-device': d.id }, td(deviceLink(d.id)), td(d.site), td(deviceStatus(d)),
        td(d.firmware_version || '–'), td(d.model_version || '–'), td(ago(d.last_seen_ns)),
        td(Object.entries(d.tags || {}).map(([k, v]) => pill(k + '=' + v))))), 'No device matches.'));
    this.pageInfo.textContent = f.matching
      ? `${f.offset + 1}–${f.offset + f.page.length} of ${f.matching.toLocaleString()}` : '0 devices';
  },
};

/** A live line chart of one or more series, drawn by uPlot. */
class LiveChart {
  constructor(title, names) {
    this.names = names;
    this.el = h('div', { class: 'card chart', 'data-chart': title }, h('div', { class: 'title' }, title));
    this.plot = null;
  }
  /** Draws `columns` ([xs in s, ys]) over the window [from_s, to_s]. */
  setData(columns, from_s, to_s) {
    this.window = [from_s, to_s];
    if (!this.plot) {
      const width = Math.max(280, this.el.clientWidth - 28);
      const colors = ['#2563eb', '#dc2626', '#16a34a', '#9333ea', '#ea580c'];
      this.plot = new uPlot({
        width, height: 180,
        series: [{}, ...this.names.map((n, i) => ({ label: n, stroke: colors[i % colors.length], width: 1.5 }))],
        // A fixed window that slides with time, however few points it holds.
        scales: { x: { time: true, range: () => this.window } },
        axes: [{}, { size: 60 }],
        legend: { live: true },
      }, columns, this.el);
    } else {
      this.plot.setData(columns);
    }
  }
  resize() {
    if (this.plot) this.plot.setSize({ width: Math.max(280, this.el.clientWidth - 28), height: 180 });
  }
}

/** Model outputs: `{model}.{output}` readings such as `rul.prediction`. */
const isPrediction = s => /\.(prediction|score|probability|anomaly|label)$/.test(s) || s.includes('.shadow.');
/** The agent's own health readings, and a model's latency. */
const isHealth = s => s.startsWith('health.') || s.endsWith('.latency_us');
const isLabel = s => s.startsWith('label.');

views.device = {
  build(root, [id]) {
    this.id = id;
    this.charts = new Map();
    this.head = h('div');
    this.info = h('div');
    this.latest = h('div');
    this.health = h('div');
    this.telemetry = h('div', { class: 'grid' });
    this.predictions = h('div', { class: 'grid' });
    this.alerts = h('div');
    this.actions = h('div');
    root.append(h('p', {}, link('#/fleet', '‹ Fleet')), this.head,
      h('h2', {}, 'Telemetry (last 5 minutes)'), this.telemetry,
      h('h2', {}, 'Predictions (last 5 minutes)'), this.predictions,
      h('div', { class: 'grid' },
        h('section', { class: 'card' }, h('h2', {}, 'Latest values'), this.latest),
        h('section', { class: 'card' }, h('h2', {}, 'Device'), this.info)),
      h('div', { class: 'grid' },
        h('section', { class: 'card' }, h('h2', {}, 'Alerts'), this.alerts),
        h('section', { class: 'card' }, h('h2', {}, 'Closed-loop actions'), this.actions)),
      h('section', { class: 'card' }, h('h2', {}, 'Agent health'), this.health));
  },
  async refresh() {
    const id = enc(this.id);
    const [d, latest, alerts, actions] = await Promise.all([
      api('/devices/' + id), api('/devices/' + id + '/latest'),
      api('/alerts?limit=20&device=' + id), apiOr('/control/actions?limit=20&device=' + id, [])]);
    this.head.replaceChildren(h('h1', {}, d.id, ' ', deviceStatus(d)));
    this.info.replaceChildren(table(['Field', 'Value'], [
      ['Site', d.site], ['Firmware', d.firmware_version || '–'], ['Model', d.model_version || '–'],
      ['Last seen', ago(d.last_seen_ns)], ['Registered', time(d.created_ns)],
      ['Tags', Object.entries(d.tags || {}).map(([k, v]) => k + '=' + v).join(', ') || '–'],
    ].map(([k, v]) => h('tr', {}, td(k, 'muted'), td(v)))));
    const rows = list => list.map(r => h('tr', { 'data-signal': r.signal }, td(r.signal), tdn(num(r.value, 3)), td(r.unit || ''),
      td(r.quality === 0 ? pill('good', 'ok') : pill('q' + r.quality, 'warn')), td(ago(r.ts_ns))));
    const headers = ['Signal', 'Value#', 'Unit', 'Quality', 'At'];
    this.latest.replaceChildren(table(headers, rows(latest.filter(r => !isHealth(r.signal))), 'No readings yet.'));
    this.health.replaceChildren(table(headers, rows(latest.filter(r => isHealth(r.signal))), 'No heartbeat yet.'));
    const signals = latest.map(r => r.signal).filter(s => !isHealth(s) && !isLabel(s)).sort();
    const to = Date.now() * 1e6, from = to - CHART_WINDOW_S * 1e9;
    await Promise.all(signals.map(async s => {
      let chart = this.charts.get(s);
      if (!chart) {
        chart = new LiveChart(s, [s]);
        this.charts.set(s, chart);
        (isPrediction(s) ? this.predictions : this.telemetry).append(chart.el);
      }
      const r = await api(`/devices/${id}/signals/${enc(s)}?from=${from}&to=${to}&bucket=2s`);
      chart.setData([r.buckets.map(b => b.start_ns / 1e9 + 1), r.buckets.map(b => b.avg)], from / 1e9, to / 1e9);
    }));
    for (const [grid, empty] of [[this.telemetry, 'No telemetry yet.'], [this.predictions, 'No model runs on this device yet.']]) {
      if (!grid.querySelector('[data-chart]')) grid.replaceChildren(h('p', { class: 'muted' }, empty));
      else for (const p of grid.querySelectorAll(':scope > p')) p.remove();
    }
    this.alerts.replaceChildren(alertTable(alerts, false));
    this.actions.replaceChildren(actionTable(actions, false));
  },
  resize() { for (const c of this.charts.values()) c.resize(); },
};

/** A model version's headline hold-out metrics, baseline last. */
function keyMetrics(metrics) {
  const m = metrics || {};
  const shown = ['mae', 'rmse', 'r2', 'accuracy', 'precision', 'recall', 'auc', 'f1'].filter(k => k in m)
    .map(k => `${k}=${num(m[k], 3)}`);
  if ('baseline_mae' in m) shown.push(`baseline mae=${num(m.baseline_mae, 3)}`);
  return shown.join('  ');
}

views.models = {
  build(root) {
    this.models = h('div');
    this.jobs = h('div');
    this.cycles = h('div');
    root.append(h('h1', {}, 'Models'), this.models,
      h('section', { class: 'card' }, h('h2', {}, 'Training and backtest jobs'), this.jobs),
      h('section', { class: 'card' }, h('h2', {}, 'Automated retraining'), this.cycles));
  },
  async refresh() {
    const [models, jobs, cycles] = await Promise.all([api('/models'), apiOr('/jobs', []), apiOr('/retraining', [])]);
    const details = await Promise.all(models.map(m => api('/models/' + enc(m.name))));
    this.models.replaceChildren(...(models.length ? details.map(detail => {
      const m = detail.model || detail;
      const versions = detail.versions || [];
      const aliasesOf = v => Object.entries(m.aliases || {}).filter(([, n]) => n === v).map(([a]) => pill(a, a === 'champion' ? 'ok' : ''));
      return h('section', { class: 'card', 'data-model': m.name }, h('h2', {}, m.name),
        table(['Version#', 'Aliases', 'Runtime', 'Inputs#', 'Outputs', 'Metrics', 'Registered'],
          versions.slice().reverse().map(v => h('tr', {}, tdn(v.version), td(aliasesOf(v.version)), td(v.runtime),
            tdn(v.input_len), td((v.outputs || []).map(o => o.name).join(', ')),
            td(h('code', {}, keyMetrics(v.metrics))),
            td(time(v.created_ns))))));
    }) : [h('p', { class: 'card muted' }, 'No model registered yet.')]));
    this.jobs.replaceChildren(table(['Job#', 'Kind', 'Model', 'State', 'Progress#', 'Message', 'Submitted', ''],
      jobs.slice(0, 20).map(j => h('tr', { 'data-job': j.id, 'data-state': j.state }, tdn(j.id), td(j.kind),
        td(j.model || (j.spec && j.spec.model) || '–'),
        td(pill(j.state, j.state === 'succeeded' ? 'ok' : j.state === 'failed' ? 'bad' : j.state === 'cancelled' ? '' : 'warn')),
        tdn(pct(j.progress)), td(j.message || ''), td(time(j.submitted_ns || j.created_ns)),
        td((j.state === 'queued' || j.state === 'running') && auth.can('ml')
          ? h('button', { class: 'cancel-job', onclick: e => cancelJob(j, e.target) }, 'Cancel') : '')))));
    this.cycles.replaceChildren(table(['Cycle#', 'Model', 'Trigger', 'State', 'Challenger', 'Updated'],
      cycles.slice(0, 20).map(c => h('tr', {}, tdn(c.id), td(c.model), td(c.trigger && (c.trigger.kind || c.trigger.reason) || JSON.stringify(c.trigger || '')),
        td(pill(c.state || c.stage || '?')), td(c.challenger ? 'v' + c.challenger : '–'),
        td(time(c.updated_ns || c.started_ns))))));
  },
};

/** Cancels a queued or running job: it stops at its next step and registers nothing. */
async function cancelJob(job, button) {
  button.disabled = true;
  try {
    await api(`/jobs/${job.id}/cancel`, { method: 'POST', body: JSON.stringify({ reason: 'on the dashboard' }) });
    await refreshNow();
  } catch (e) {
    showError('Could not cancel job ' + job.id + ': ' + e.message);
    button.disabled = false;
  }
}

/** A bar of a wave's devices by state. */
function waveBar(states, total) {
  const colors = { done: '#16a34a', committed: '#16a34a', succeeded: '#16a34a', failed: '#dc2626', rolled_back: '#dc2626',
    pending: '#cbd5e1', waiting: '#cbd5e1' };
  return h('div', { class: 'bar', title: Object.entries(states).map(([k, v]) => `${k}: ${v}`).join(', ') },
    Object.entries(states).map(([k, v]) => h('span', { style: `width:${100 * v / Math.max(1, total)}%;background:${colors[k] || '#60a5fa'}` })));
}

views.rollouts = {
  build(root) {
    this.list = h('div');
    root.append(h('h1', {}, 'Rollouts'), this.list);
  },
  async refresh() {
    const campaigns = await api('/campaigns');
    const details = await Promise.all(campaigns.slice(0, 20).map(c => api('/campaigns/' + c.id)));
    this.list.replaceChildren(...(details.length ? details.map(c => h('section', { class: 'card', 'data-campaign': c.id },
      h('h2', {}, `#${c.id} ${c.name || ''} `, pill(c.state, c.state === 'completed' ? 'ok' : c.state === 'aborted' || c.state === 'failed' ? 'bad' : 'warn')),
      h('p', { class: 'muted' }, `${c.devices} devices · `, Object.entries(c.totals || {}).map(([k, v]) => `${k} ${v}`).join(' · ')),
      table(['Wave#', 'Devices#', 'Progress', 'States', 'Started', 'Finished'],
        (c.progress || []).map(w => h('tr', {}, tdn(w.wave), tdn(w.devices), td(waveBar(w.states, w.devices)),
          td(Object.entries(w.states).map(([k, v]) => pill(`${k} ${v}`))), td(time(w.started_ns)), td(time(w.finished_ns))))),
      (c.failures || []).length ? h('p', { class: 'bad' }, 'Failed: ', c.failures.map(f => f.device).join(', ')) : null))
      : [h('p', { class: 'card muted' }, 'No rollout campaign yet.')]));
  },
};

views.drift = {
  build(root) {
    this.kpis = h('div');
    this.models = h('div');
    this.accuracy = h('div');
    this.drift = h('div');
    root.append(h('h1', {}, 'Drift & KPIs'),
      h('div', { class: 'grid' },
        h('section', { class: 'card' }, h('h2', {}, 'Uptime and data freshness'), this.kpis),
        h('section', { class: 'card' }, h('h2', {}, 'Inference latency'), this.models)),
      h('section', { class: 'card' }, h('h2', {}, 'Accuracy against late labels'), this.accuracy),
      h('section', { class: 'card' }, h('h2', {}, 'Data drift of the champion models'), this.drift));
  },
  async refresh() {
    const [k, models] = await Promise.all([apiOr('/kpis', null), api('/models')]);
    if (k) {
      const row = (name, g) => h('tr', {}, td(name), tdn(g.devices), tdn(g.online), tdn(pct(g.uptime)),
        tdn(g.freshness_p50_s === null ? '–' : num(g.freshness_p50_s, 1) + ' s'), tdn(g.stale));
      this.kpis.replaceChildren(table(['Scope', 'Devices#', 'Online#', 'Uptime#', 'Freshness p50#', 'Stale#'],
        [row('fleet', k.fleet), ...Object.entries(k.sites).map(([s, g]) => row(s, g))]),
        h('p', { class: 'muted' }, `window ${time(k.from_ns)} – ${time(k.to_ns)}`));
      this.models.replaceChildren(table(['Model', 'Scope', 'Runs#', 'p50#', 'p99#'],
        k.models.map(m => h('tr', {}, td(m.model), td(m.scope), tdn(m.runs.toLocaleString()),
          tdn(num(m.latency_p50_us, 0) + ' µs'), tdn(num(m.latency_p99_us, 0) + ' µs')))));
      this.accuracy.replaceChildren(table(['Model', 'Version#', 'Pairs#', 'MAE#', 'Accuracy#', 'Decay#'],
        k.accuracy.map(a => h('tr', {}, td(a.model), tdn(a.version), tdn(a.pairs), tdn(num(a.mae, 3)),
          tdn(pct(a.accuracy)), tdn(a.decay === null ? '–' : num(a.decay, 3))))));
    }
    const reports = await Promise.all(models.filter(m => m.aliases && m.aliases.champion).map(async m => {
      const v = m.aliases.champion;
      return [m.name, v, await apiOr(`/models/${enc(m.name)}/versions/${v}/drift`, null)];
    }));
    this.drift.replaceChildren(...(reports.length ? reports.map(([name, v, r]) => h('div', {},
      h('h2', {}, `${name} v${v}`),
      r ? driftTable(r) : h('p', { class: 'muted' }, 'No drift report yet (needs a reference profile and sketches from the edge).')))
      : [h('p', { class: 'muted' }, 'No champion model yet.')]));
  },
};

/** The signals of a drift report with their scores and attribution. */
function driftTable(r) {
  const scored = r.signals.filter(s => s.overall);
  const note = h('p', { class: 'muted' }, `${r.devices} devices, ${r.batches} sketches, ${time(r.from_ns)} – ${time(r.to_ns)}; PSI threshold ${r.psi_threshold}`);
  if (!scored.length) {
    return h('div', {}, note, h('p', { class: 'muted' }, r.batches
      ? 'Too few values in the sketches so far to judge drift (a feature needs 50 in the window).'
      : 'No sketch from the edge in this window yet.'));
  }
  return h('div', {}, note, table(['Signal', 'Kind', 'n#', 'PSI#', 'Jensen-Shannon#', 'Wasserstein (normed)#', 'KS lower bound#', 'Mean shift#', 'Drift', 'Attribution'],
    scored.map(s => h('tr', { 'data-drift': s.name }, td(s.name), td(s.kind), tdn(s.overall.n), tdn(num(s.overall.psi, 4)),
      tdn(num(s.overall.jensen_shannon, 4)), tdn(num(s.overall.wasserstein_normed, 4)), tdn(num(s.overall.ks_lower_bound, 4)),
      tdn(num(s.overall.mean_shift, 3)), td(s.overall.drifted ? pill('drifted', 'bad') : pill('steady', 'ok')),
      td(s.attribution ? s.attribution.summary : '')))));
}

/** Alerts with their state, and an acknowledge button on active ones. */
function alertTable(alerts, withDevice = true) {
  return table(['Severity', 'Rule', ...(withDevice ? ['Device'] : []), 'State', 'Message', 'Value#', 'Breaches#', 'Raised', ''],
    alerts.map(a => h('tr', { 'data-alert': a.id, 'data-state': a.state },
      td(severityPill(a.severity)), td(a.rule), ...(withDevice ? [td(deviceLink(a.device))] : []),
      td(alertStatePill(a.state)), td(a.message), tdn(num(a.last_value, 2)), tdn(a.breaches), td(ago(a.raised_ns)),
      td(a.state === 'active' && auth.can('operate') ? h('button', { class: 'ack', onclick: e => acknowledge(a, e.target) }, 'Acknowledge')
        : a.acknowledged_by ? h('span', { class: 'muted' }, 'by ' + a.acknowledged_by) : ''))),
    'No alerts.');
}

async function acknowledge(alert, button) {
  const by = localStorage.getItem('strata.operator') || 'operator';
  button.disabled = true;
  try {
    await api(`/alerts/${alert.id}/ack`, { method: 'POST', body: JSON.stringify({ by, note: 'acknowledged on the dashboard' }) });
    await refreshNow();
  } catch (e) {
    showError('Could not acknowledge alert ' + alert.id + ': ' + e.message);
    button.disabled = false;
  }
}

views.alerts = {
  build(root) {
    views.alerts.filter = views.alerts.filter || 'open';
    this.list = h('div');
    this.deliveries = h('div');
    this.runs = h('div');
    const choose = h('select', { 'aria-label': 'Which alerts', onchange: e => { views.alerts.filter = e.target.value; this.refresh(); } },
      [['open', 'Open (active or acknowledged)'], ['active', 'Active'], ['acknowledged', 'Acknowledged'], ['cleared', 'Cleared'], ['all', 'All']]
        .map(([v, t]) => h('option', { value: v, selected: v === this.filter }, t)));
    // Only the shared admin token names who acts; everyone else acts as themselves.
    const who = auth.shared ? h('input', { placeholder: 'acknowledge as', value: localStorage.getItem('strata.operator') || 'operator', 'aria-label': 'Acknowledge as',
      onchange: e => localStorage.setItem('strata.operator', e.target.value.trim() || 'operator') }) : '';
    root.append(h('h1', {}, 'Alerts'),
      h('section', { class: 'card' }, h('div', { class: 'toolbar' }, choose, who), this.list),
      h('div', { class: 'grid' },
        h('section', { class: 'card' }, h('h2', {}, 'Webhook deliveries'), this.deliveries),
        h('section', { class: 'card' }, h('h2', {}, 'Workflow runs'), this.runs)));
  },
  async refresh() {
    const q = this.filter === 'open' ? 'open=true' : this.filter === 'all' ? '' : 'state=' + this.filter;
    const [alerts, deliveries, runs] = await Promise.all([
      api('/alerts?limit=200&' + q), apiOr('/webhooks/deliveries?limit=20', []), apiOr('/workflows/runs?limit=20', [])]);
    this.list.replaceChildren(alertTable(alerts));
    this.deliveries.replaceChildren(table(['Id#', 'Endpoint', 'Event', 'State', 'Attempts#', 'Last error'],
      deliveries.slice(0, 20).map(d => h('tr', {}, tdn(d.id), td(d.endpoint), td(d.event),
        td(pill(d.state, d.state === 'delivered' ? 'ok' : d.state === 'failed' ? 'bad' : 'warn')), tdn(d.attempts), td(d.last_error || '')))));
    this.runs.replaceChildren(table(['Run#', 'Workflow', 'Device', 'State', 'Step#', 'Updated'],
      runs.slice(0, 20).map(r => h('tr', {}, tdn(r.id), td(r.workflow), td((r.trigger && r.trigger.device) || '–'),
        td(pill(r.state, r.state === 'succeeded' || r.state === 'done' ? 'ok' : r.state === 'failed' ? 'bad' : 'warn')),
        tdn(r.step !== undefined ? r.step : '–'), td(time(r.updated_ns || r.started_ns))))));
  },
};

/** Closed-loop action records, with an approve button on proposals. */
function actionTable(actions, withDevice = true) {
  return table(['At', ...(withDevice ? ['Device'] : []), 'Rule', 'Output', 'Outcome', 'Value#', 'Reason', ''],
    actions.map(a => {
      const kind = a.outcome === 'written' ? 'ok' : a.outcome === 'blocked' || a.outcome === 'failed' ? 'bad' : 'warn';
      return h('tr', { 'data-action': a.action }, td(time(a.ts_ns)), ...(withDevice ? [td(deviceLink(a.device))] : []), td(a.rule), td(a.output),
        td(pill(a.outcome, kind)), tdn(a.value !== null && a.value !== undefined ? num(a.value, 2) : a.requested !== null && a.requested !== undefined ? num(a.requested, 2) : '–'),
        td(a.reason), td(a.outcome === 'proposed' && auth.can('operate') ? h('button', { class: 'approve', onclick: e => approve(a, e.target) }, 'Approve') : a.approved_by ? 'by ' + a.approved_by : ''));
    }), 'No closed-loop action recorded.');
}

async function approve(record, button) {
  button.disabled = true;
  try {
    await api(`/control/actions/${enc(record.device)}/${enc(record.action)}/approve`, {
      method: 'POST', body: JSON.stringify({ by: localStorage.getItem('strata.operator') || 'operator' }) });
    await refreshNow();
  } catch (e) {
    showError('Could not approve: ' + e.message);
    button.disabled = false;
  }
}

views.control = {
  build(root) {
    this.gates = h('div');
    this.actions = h('div');
    root.append(h('h1', {}, 'Closed-loop control'), this.gates,
      h('section', { class: 'card' }, h('h2', {}, 'Action record'), this.actions));
  },
  async refresh() {
    const [gates, actions] = await Promise.all([api('/control/gates'), api('/control/actions?limit=100')]);
    this.gates.replaceChildren(...(gates.length ? [h('div', { class: 'grid' }, gates.map(g => h('section', { class: 'card', 'data-gate': g.site },
      h('h2', {}, `${g.site} · phase ${g.phase} `, g.open ? pill('gate open', 'ok') : pill('gate closed', 'bad')),
      h('p', {}, g.open ? 'Closed-loop rules on this site may act: every check passes.'
        : 'Closed-loop rules on this site write nothing: ' + (g.reason || 'a check fails.')),
      table(['Check', 'Required', 'Measured#', ''], g.checks.map(c => h('tr', {}, td(c.kpi), td(`${c.op} ${num(c.required, 3)}`),
        tdn(num(c.measured, 4)), td(c.ok ? pill('pass', 'ok') : pill('fail', 'bad')))), 'No checks: phase 1 never arms rules.'),
      h('p', { class: 'muted' }, 'measured ' + ago(g.ts_ns)))))]
      : [h('p', { class: 'card muted' }, 'No site has a gate yet ([control] in the hub configuration).')]));
    this.actions.replaceChildren(actionTable(actions));
  },
};

views.audit = {
  build(root) {
    this.list = h('div');
    this.signed = h('div');
    this.verdict = h('span', { id: 'audit-verdict' });
    const verify = h('button', { id: 'audit-verify', onclick: () => this.verify() }, 'Verify the chain');
    root.append(h('h1', {}, 'Audit'),
      ...(auth.can('admin') ? [h('section', { class: 'card' }, h('h2', {}, 'Audit log (hash-chained, signed)'),
        h('div', { class: 'toolbar' }, verify, this.verdict), this.signed)] : []),
      h('p', { class: 'muted' }, 'What changed in the fleet, newest first: alerts raised, acknowledged and cleared, closed-loop actions, rollouts, training and retraining.'),
      h('section', { class: 'card' }, this.list));
  },
  async verify() {
    try {
      const r = await api('/audit/verify');
      this.verdict.replaceChildren(r.problems.length ? pill(r.problems.length + ' problem(s): ' + r.problems[0], 'bad')
        : pill(`intact: ${r.entries} entries, ${r.checkpoints} signed checkpoints`, 'ok'));
    } catch (e) { showError('Could not verify the audit log: ' + e.message); }
  },
  async refresh() {
    if (auth.can('admin')) {
      const log = await api('/audit?limit=100');
      this.signed.replaceChildren(table(['Seq#', 'At', 'Who', 'Action', 'Target', 'Outcome'],
        log.map(e => h('tr', { 'data-seq': e.seq }, tdn(e.seq), td(time(e.ts_ns)), td(e.actor), td(e.action), td(e.target),
          td(pill(e.outcome, e.outcome === 'ok' ? 'ok' : e.outcome === 'denied' ? 'bad' : 'warn')))), 'Nothing recorded yet.'));
    }
    const [alerts, actions, campaigns, jobs, cycles] = await Promise.all([
      api('/alerts?limit=200'), apiOr('/control/actions?limit=200', []), apiOr('/campaigns', []),
      apiOr('/jobs', []), apiOr('/retraining', [])]);
    const events = [];
    for (const a of alerts) {
      events.push([a.raised_ns, 'alert raised', a.device, `${a.rule}: ${a.message}`, 'hub']);
      if (a.acknowledged_ns) events.push([a.acknowledged_ns, 'alert acknowledged', a.device, `${a.rule}${a.note ? ': ' + a.note : ''}`, a.acknowledged_by]);
      if (a.cleared_ns) events.push([a.cleared_ns, 'alert cleared', a.device, a.rule, 'hub']);
    }
    for (const a of actions) events.push([a.ts_ns, 'control ' + a.outcome, a.device, `${a.rule} → ${a.output}: ${a.reason}`, a.approved_by || a.device]);
    for (const c of campaigns) events.push([c.created_ns, 'rollout ' + c.state, '', `#${c.id} ${c.name || ''}`, 'admin']);
    for (const j of jobs) events.push([j.created_ns, j.kind + ' job ' + j.state, '', `#${j.id} ${(j.spec && j.spec.model) || ''} (${(j.spec && j.spec.trigger) || 'manual'})`, 'admin']);
    for (const c of cycles) events.push([c.started_ns || c.created_ns, 'retraining ' + (c.state || ''), '', `#${c.id} ${c.model}`, 'retrainer']);
    events.sort((a, b) => (b[0] || 0) - (a[0] || 0));
    this.list.replaceChildren(table(['At', 'What', 'Device', 'Detail', 'By'],
      events.slice(0, 200).map(([t, what, dev, detail, by]) => h('tr', {}, td(time(t)), td(what), td(dev ? deviceLink(dev) : ''), td(detail), td(by || '')))));
  },
};

// ---------------------------------------------------------------- shell

let current = null;
let timer = null;
let generation = 0;

function showError(text) {
  const el = document.getElementById('error');
  el.textContent = text;
  el.hidden = !text;
}

function setLive(ok, text) {
  const el = document.getElementById('live');
  el.className = 'live ' + (ok ? 'ok' : 'stale');
  el.textContent = text;
}

async function refreshNow() {
  if (!current) return;
  const mine = generation;
  try {
    await current.view.refresh();
    if (mine !== generation) return;
    setLive(true, 'live · ' + new Date().toLocaleTimeString());
    showError('');
    const open = await api('/alerts?open=true&state=active&limit=1000');
    const badge = document.getElementById('alert-badge');
    badge.textContent = open.length;
    badge.hidden = !open.length;
  } catch (e) {
    if (e instanceof Unauthorized) { signIn('The hub refused the token; sign in again.'); return; }
    setLive(false, 'stale · ' + new Date().toLocaleTimeString());
    showError(e.message);
  }
}

/** Refreshes the view of generation `mine` every REFRESH_MS, one round at a
 * time (the next starts once the last is done), and not while the tab is
 * hidden; ends when the page moves on. */
async function poll(mine) {
  if (mine !== generation) return;
  if (!document.hidden) await refreshNow();
  if (mine === generation && current) timer = setTimeout(() => poll(mine), REFRESH_MS);
}

function route() {
  // `#token=...` (as `strata demo` prints it) signs in and leaves the URL.
  const fromUrl = location.hash.match(/token=([^&]+)/);
  if (fromUrl) {
    auth.token = decodeURIComponent(fromUrl[1]);
    auth.me = null;
    history.replaceState(null, '', location.pathname + '#/fleet');
  }
  if (!auth.token) { signIn(); return; }
  if (!auth.me) { whoami(); return; }
  const [name, ...args] = (location.hash.replace(/^#\/?/, '') || 'fleet').split('/').map(decodeURIComponent);
  const view = views[name] || views.fleet;
  generation += 1;
  clearTimeout(timer);
  const main = document.getElementById('main');
  main.replaceChildren();
  // A fresh instance per visit: a refresh of the last visit still in
  // flight writes into that one's (detached) elements, never into these.
  const instance = Object.create(view);
  instance.build(main, args);
  current = { view: instance, name };
  for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('on', a.dataset.page === (name === 'device' ? 'fleet' : name));
  document.getElementById('signout').hidden = false;
  poll(generation);
}

/** Learns who the token is, then shows the page; a refused token signs out. */
async function whoami() {
  try {
    auth.me = await api('/whoami');
    document.getElementById('whoami').textContent = `${auth.me.name} · ${auth.me.role.replace('_', ' ')}`;
    route();
  } catch (e) {
    if (e instanceof Unauthorized) signIn('The hub refused the token; sign in again.');
    else showError('Cannot reach the hub: ' + e.message);
  }
}

function signIn(message) {
  clearTimeout(timer);
  generation += 1;
  current = null;
  auth.token = null;
  auth.me = null;
  document.getElementById('whoami').textContent = '';
  const main = document.getElementById('main');
  main.replaceChildren(document.getElementById('login').content.cloneNode(true));
  document.getElementById('signout').hidden = true;
  setLive(false, 'signed out');
  if (message) document.getElementById('login-error').textContent = message;
  document.getElementById('login-form').addEventListener('submit', async e => {
    e.preventDefault();
    const user = document.getElementById('user').value.trim();
    const secret = document.getElementById('token').value;
    if (!user) { auth.token = secret.trim(); route(); return; }
    const res = await fetch('/api/v1/login', { method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ user, password: secret }) });
    const body = await res.json().catch(() => null);
    if (!res.ok) {
      document.getElementById('login-error').textContent = (body && body.error && body.error.message) || 'sign-in failed';
      return;
    }
    auth.token = body.token;
    localStorage.setItem('strata.session', body.info.id);
    route();
  });
}

window.addEventListener('hashchange', route);
window.addEventListener('resize', () => current && current.view.resize && current.view.resize());
/** Signs out: a session the page opened with a password is revoked at the
 * hub too, so the token left in this browser is worth nothing (a token
 * pasted in, which scripts may share, is left alone). */
async function signOut() {
  const me = auth.me;
  if (me && me.token_id && localStorage.getItem('strata.session') === me.token_id) {
    try { await api(`/tokens/${enc(me.token_id)}`, { method: 'DELETE' }); } catch (e) { /* signed out here anyway */ }
  }
  signIn();
}

document.getElementById('signout').addEventListener('click', signOut);
route();
