/**
 * The run report (`GET /api/export.html`): one self-contained HTML file made from a RunExport.
 * Inline CSS, inline SVG and a little inline JS; a Content-Security-Policy forbids every fetch,
 * so it opens offline (file://) and shows the same thing years later. It holds:
 * the totals, the distribution per replica, a timeline of which replica answered each request,
 * the latest requests in order, health decisions, load runs, connections, what was done (the
 * lab's log), and the configuration used (settings, routes, the proxy's own config text).
 * The run's JSON is embedded too (a "Save the data" button writes it to a file).
 */
import type { Balancer } from '../lab/topology.ts';
import { replicaColor } from '../web/src/lib/colors.ts';
import type { ExportedRequest, RunExport } from './export.ts';

/** Above this many requests the timeline draws counts per time slice instead of one mark each. */
const TIMELINE_MARKS_MAX = 3_000;
/** Time slices of the aggregated timeline. */
const TIMELINE_SLICES = 240;
/** Requests shown one by one, in order, in the "latest requests" strip and table. */
const SEQUENCE_SHOWN = 60;
const TABLE_SHOWN = 200;

/** Escapes text for HTML content and attribute values. */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

/** JSON safe inside <script>: no `<` (so no `</script>`), no U+2028/2029. */
function scriptJson(value: unknown): string {
  return JSON.stringify(value).replace(/</g, '\\u003c').replace(/\u2028/g, '\\u2028').replace(/\u2029/g, '\\u2029');
}

const time = (at: number): string => new Date(at).toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
const clock = (at: number): string => new Date(at).toISOString().slice(11, 23);
const seconds = (ms: number): string => `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
const color = (replica: string | null): string => (replica ? replicaColor(replica) : '#c62828');
const isFailed = (r: ExportedRequest): boolean => r.status >= 500 || r.error !== undefined;

function balancerText(b: Partial<Balancer> & { clientIdle?: number }): string[] {
  const out: string[] = [];
  if (b.algorithm) out.push(`algorithm ${b.algorithm}${b.algorithm === 'hash' ? ` on ${b.hashHeader ?? 'X-Session-ID'} (${b.hashType ?? 'consistent'})` : ''}`);
  if (b.sticky !== undefined) out.push(`sticky ${b.sticky ? `on${b.stickyCookie ? ` (cookie ${b.stickyCookie})` : ''}` : 'off'}`);
  if (b.healthCheck !== undefined) {
    out.push(
      b.healthCheck
        ? `health check ${b.healthCheckPath ?? '/health'} every ${b.healthCheckInterval ?? '?'} ms (timeout ${b.healthCheckTimeout ?? '?'} ms, fall ${b.healthCheckFall ?? '?'}, rise ${b.healthCheckRise ?? '?'})`
        : 'health check off',
    );
  }
  if (b.retry !== undefined) out.push(b.retry ? `retry on (${b.retryAttempts ?? '?'} attempts)` : 'retry off');
  for (const key of ['vip', 'reuse', 'dnsrr'] as const) if (b[key] !== undefined) out.push(`${key} ${b[key] ? 'on' : 'off'}`);
  if (b.backendKeepAlive !== undefined) out.push(`backend keep-alive ${b.backendKeepAlive} ms`);
  if (b.clientIdle !== undefined) out.push(`client idle timeout ${b.clientIdle} ms`);
  return out;
}

function distribution(run: RunExport): string {
  const entries = Object.entries(run.counts.byReplica).sort((a, b) => a[0].localeCompare(b[0]));
  const noReplica = run.counts.total - entries.reduce((n, [, c]) => n + c, 0);
  if (noReplica > 0) entries.push(['(no replica answered)', noReplica]);
  if (entries.length === 0) return '<p class="empty">No request went through the proxy during this run.</p>';
  const max = Math.max(...entries.map(([, c]) => c));
  const rowH = 26;
  const labelW = 230;
  const barW = 520;
  const rows = entries
    .map(([name, count], i) => {
      const w = Math.max(2, Math.round((count / max) * barW));
      const pct = ((count / Math.max(1, run.counts.total)) * 100).toFixed(1);
      const replica = name.startsWith('(') ? null : name;
      return `<g class="row" data-testid="report-count" data-replica="${escapeHtml(replica ?? '')}" data-count="${count}" transform="translate(0 ${i * rowH})">
  <text x="${labelW - 8}" y="17" text-anchor="end">${escapeHtml(name)}</text>
  <rect x="${labelW}" y="4" width="${w}" height="${rowH - 8}" rx="3" fill="${color(replica)}"><title>${escapeHtml(name)}: ${count} (${pct} %)</title></rect>
  <text x="${labelW + w + 6}" y="17">${count} <tspan class="muted">(${pct} %)</tspan></text>
</g>`;
    })
    .join('\n');
  return `<svg class="chart" role="img" aria-label="Requests per replica" viewBox="0 0 ${labelW + barW + 130} ${entries.length * rowH}" width="100%">${rows}</svg>`;
}

function timeline(run: RunExport): string {
  const reqs = run.requests;
  if (reqs.length === 0) return '<p class="empty">No request to draw.</p>';
  const lanes = [...new Set(reqs.map((r) => r.replica ?? '(no replica)'))].sort((a, b) => (a.startsWith('(') ? 1 : b.startsWith('(') ? -1 : a.localeCompare(b)));
  // From the first request to the last (at least a second), so a quiet start does not squeeze them.
  const t0 = reqs[0].at;
  const t1 = Math.max(reqs.at(-1)!.at + 1, t0 + 1000);
  const labelW = 230;
  const plotW = 640;
  const laneH = 24;
  const top = 6;
  const x = (at: number) => labelW + ((at - t0) / (t1 - t0)) * plotW;
  const laneY = (name: string) => top + lanes.indexOf(name) * laneH;
  const parts: string[] = [];
  lanes.forEach((name, i) => {
    const y = top + i * laneH;
    parts.push(`<text x="${labelW - 8}" y="${y + 16}" text-anchor="end">${escapeHtml(name)}</text><line class="lane" x1="${labelW}" x2="${labelW + plotW}" y1="${y + laneH / 2}" y2="${y + laneH / 2}"/>`);
  });
  if (reqs.length <= TIMELINE_MARKS_MAX) {
    for (const r of reqs) {
      const lane = r.replica ?? '(no replica)';
      const failed = isFailed(r);
      parts.push(
        `<rect class="mark${failed ? ' failed' : ''}" data-testid="report-mark" data-replica="${escapeHtml(r.replica ?? '')}" x="${x(r.at).toFixed(1)}" y="${laneY(lane) + 4}" width="3" height="${laneH - 8}" fill="${failed ? '#c62828' : color(r.replica)}"><title>${escapeHtml(`#${r.id} ${clock(r.at)} ${r.method} ${r.path} -> ${r.replica ?? 'no replica'} ${r.status}${r.error ? ` ${r.error}` : ''} (${r.ms} ms)`)}</title></rect>`,
      );
    }
  } else {
    // Too many for one mark each: per lane, a bar per time slice whose opacity is its share.
    const slice = (t1 - t0) / TIMELINE_SLICES;
    const grid = new Map<string, number[]>(lanes.map((l) => [l, new Array<number>(TIMELINE_SLICES).fill(0)]));
    for (const r of reqs) grid.get(r.replica ?? '(no replica)')![Math.min(TIMELINE_SLICES - 1, Math.floor((r.at - t0) / slice))]++;
    const max = Math.max(1, ...[...grid.values()].flat());
    for (const [lane, counts] of grid) {
      counts.forEach((n, i) => {
        if (n === 0) return;
        parts.push(
          `<rect class="mark" data-testid="report-mark" data-replica="${escapeHtml(lane.startsWith('(') ? '' : lane)}" data-count="${n}" x="${x(t0 + i * slice).toFixed(1)}" y="${laneY(lane) + 4}" width="${Math.max(1, plotW / TIMELINE_SLICES).toFixed(1)}" height="${laneH - 8}" fill="${lane.startsWith('(') ? '#c62828' : color(lane)}" fill-opacity="${(0.25 + (0.75 * n) / max).toFixed(2)}"><title>${escapeHtml(`${lane}: ${n} request(s) from ${clock(t0 + i * slice)}`)}</title></rect>`,
        );
      });
    }
  }
  const h = top + lanes.length * laneH;
  parts.push(`<text class="muted" x="${labelW}" y="${h + 16}">${escapeHtml(clock(t0))}</text><text class="muted" x="${labelW + plotW}" y="${h + 16}" text-anchor="end">${escapeHtml(clock(t1))} (+${seconds(t1 - t0)})</text>`);
  return `<svg class="chart" role="img" aria-label="Which replica answered, over time" viewBox="0 0 ${labelW + plotW + 20} ${h + 24}" width="100%">${parts.join('\n')}</svg>`;
}

function sequence(run: RunExport): string {
  const last = run.requests.slice(-SEQUENCE_SHOWN);
  if (last.length === 0) return '';
  const chips = last
    .map((r) => {
      const failed = isFailed(r);
      const label = r.replica ? r.replica.replace(/-[0-9a-f]{4}$/, '') : String(r.status);
      return `<li class="chip${failed ? ' failed' : ''}" style="--c:${failed ? '#c62828' : color(r.replica)}" title="${escapeHtml(`#${r.id} ${clock(r.at)} ${r.path} -> ${r.replica ?? 'no replica'} ${r.status}`)}">${escapeHtml(label)}</li>`;
    })
    .join('');
  return `<h3>The last ${last.length} requests, in order</h3><ol class="sequence" data-testid="report-sequence">${chips}</ol>`;
}

function requestTable(run: RunExport): string {
  const last = run.requests.slice(-TABLE_SHOWN).reverse();
  if (last.length === 0) return '';
  const rows = last
    .map(
      (r) =>
        `<tr${isFailed(r) ? ' class="failed"' : ''}><td>${r.id}</td><td>${clock(r.at)}</td><td>${escapeHtml(r.method)} ${escapeHtml(r.path)}</td><td>${escapeHtml(r.service ?? '')}</td><td><span class="dot" style="--c:${color(r.replica)}"></span>${escapeHtml(r.replica ?? 'none')}</td><td>${r.status}${r.error ? ` ${escapeHtml(r.error)}` : ''}${r.retried ? ' (retried)' : ''}</td><td>${r.ms}</td><td>${escapeHtml(r.clientConnId)}</td></tr>`,
    )
    .join('\n');
  return `<details><summary>The newest ${last.length} requests (table)</summary><table><thead><tr><th>#</th><th>time (UTC)</th><th>request</th><th>service</th><th>replica</th><th>status</th><th>ms</th><th>client connection</th></tr></thead><tbody>${rows}</tbody></table></details>`;
}

function configuration(run: RunExport): string {
  const t = run.topology;
  const services = Object.entries(t.services)
    .map(([name, spec]) => {
      const overrides = balancerText((spec?.balancer ?? {}) as Partial<Balancer>);
      return `<tr><td>${escapeHtml(name)}</td><td>${spec?.replicas ?? 0}</td><td>${escapeHtml(overrides.join(', ') || '(proxy-wide settings)')}</td></tr>`;
    })
    .join('');
  const routes = t.routes
    .map((r) => `<tr><td>${escapeHtml(r.host ?? '(any host)')}</td><td>${escapeHtml(r.pathPrefix)}</td><td>${r.stripPrefix ? 'yes' : 'no'}</td><td>${escapeHtml(r.service)}</td></tr>`)
    .join('');
  const replicas = run.replicas
    .map((r) => `<tr><td><span class="dot" style="--c:${color(r.hostname)}"></span>${escapeHtml(r.hostname)}</td><td>${escapeHtml(r.state)}</td><td>${r.port ?? '-'}</td><td>${r.weight}</td><td>${escapeHtml(r.fault)}</td><td>${r.requests}</td></tr>`)
    .join('');
  return `<section data-testid="report-config">
<h2>Configuration used</h2>
<p>Proxy engine: <strong data-testid="report-driver">${escapeHtml(run.proxy.driver)}</strong>${run.proxy.driversUsed.length > 1 ? ` (during the run: ${escapeHtml(run.proxy.driversUsed.join(' → '))})` : ''}; discovery ${escapeHtml(t.discovery)}.</p>
<p>Proxy-wide balancing: ${escapeHtml(balancerText(t.proxy).join(', '))}.</p>
<table><thead><tr><th>service</th><th>replicas</th><th>its own settings</th></tr></thead><tbody>${services}</tbody></table>
<h3>Routes</h3>
${routes ? `<table><thead><tr><th>host</th><th>path prefix</th><th>strip prefix</th><th>service</th></tr></thead><tbody>${routes}</tbody></table>` : '<p class="empty">No routes.</p>'}
<h3>Replicas at the end of the run</h3>
${replicas ? `<table><thead><tr><th>replica</th><th>state</th><th>port</th><th>weight</th><th>fault</th><th>requests</th></tr></thead><tbody>${replicas}</tbody></table>` : '<p class="empty">No replicas.</p>'}
<details><summary>The proxy's configuration (${escapeHtml(run.proxy.driver === 'haproxy' ? 'haproxy.cfg' : 'as the proxy renders it')})</summary><pre>${escapeHtml(run.proxy.config || '(none recorded)')}</pre></details>
</section>`;
}

function health(run: RunExport): string {
  const { changes, probes } = run.health;
  if (changes.length === 0 && probes.length === 0) return '';
  const failedProbes = probes.filter((p) => !p.ok).length;
  const rows = changes
    .map((c) => `<li>${clock(c.at)}: the proxy marked <strong>${escapeHtml(c.hostname)}</strong> ${c.healthy ? 'UP (back in the rotation)' : 'DOWN (out of the rotation)'}</li>`)
    .join('');
  return `<section><h2>Health checks</h2><p>${probes.length + run.health.probesOmitted} probe(s), ${failedProbes} of the ${probes.length} kept failed.</p>${rows ? `<ul>${rows}</ul>` : '<p class="empty">No replica changed state.</p>'}</section>`;
}

function load(run: RunExport): string {
  if (run.load.runs.length === 0 && run.load.ticks.length === 0) return '';
  const rows = run.load.runs
    .map(
      (r) =>
        `<tr><td>${escapeHtml(r.runId)}</td><td>${clock(r.at)}</td><td>${r.sent}</td><td>${r.ok}</td><td>${r.failed}</td><td>${r.failureWindowMs === null ? '-' : `${r.failureWindowMs} ms`}</td></tr>`,
    )
    .join('');
  return `<section><h2>Load runs</h2>${rows ? `<table><thead><tr><th>run</th><th>ended</th><th>sent</th><th>ok</th><th>failed</th><th>failure window</th></tr></thead><tbody>${rows}</tbody></table>` : `<p>${run.load.ticks.length} second(s) of a load run that had not finished at export time.</p>`}</section>`;
}

function connections(run: RunExport): string {
  const hops = [...new Set([...Object.keys(run.connections.opened), ...Object.keys(run.connections.closed)])];
  if (hops.length === 0) return '';
  const rows = hops
    .map((h) => `<tr><td>${escapeHtml(h)}</td><td>${run.connections.opened[h as keyof typeof run.connections.opened] ?? 0}</td><td>${run.connections.closed[h as keyof typeof run.connections.closed] ?? 0}</td></tr>`)
    .join('');
  const by = Object.entries(run.connections.closedBy).map(([k, v]) => `${escapeHtml(k)} ${v}`).join(', ');
  const reasons = Object.entries(run.connections.reasons)
    .sort((a, b) => b[1] - a[1])
    .map(([k, v]) => `${escapeHtml(k)} ${v}`)
    .join(', ');
  return `<section><h2>TCP connections</h2><table><thead><tr><th>hop</th><th>opened</th><th>closed</th></tr></thead><tbody>${rows}</tbody></table><p>Closed by: ${by || '-'}. Reasons: ${reasons || '-'}.</p></section>`;
}

function labLog(run: RunExport): string {
  if (run.labLog.length === 0) return '';
  const lines = run.labLog.map((l) => `${clock(l.at)}  ${l.text}`).join('\n');
  return `<section><h2>What was done</h2><pre class="log" data-testid="report-log">${escapeHtml(lines)}</pre></section>`;
}

/**
 * Renders the self-contained report of a run. Pure; the result needs no network to display.
 * @param run what `RunRecorder.export()` returned
 * @param title the lesson's title when known (shown as the heading's subtitle)
 */
export function renderRunReport(run: RunExport, title?: string): string {
  const span = Math.max(0, run.exportedAt - run.startedAt);
  const okCount = run.counts.total - run.counts.failed;
  const replicaCount = Object.keys(run.counts.byReplica).length;
  const heading = title ? `${title}` : run.lesson ? run.lesson : 'Balancer Lab run';
  const csp = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'";
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="${csp}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(heading)} · Balancer Lab run report</title>
<style>
  :root { font-family: system-ui, -apple-system, 'Segoe UI', Roboto, 'Liberation Sans', sans-serif; color: #1b2430; background: #fff; }
  body { max-width: 960px; margin: 0 auto; padding: 1.5rem 1.25rem 4rem; line-height: 1.45; }
  h1 { margin: 0 0 0.2rem; font-size: 1.6rem; }
  h2 { margin-top: 2rem; font-size: 1.2rem; border-bottom: 1px solid #d7dee7; padding-bottom: 0.2rem; }
  h3 { font-size: 1rem; margin-top: 1.2rem; }
  .kicker { text-transform: uppercase; letter-spacing: 0.06em; font-size: 0.78rem; color: #5b6776; margin: 0; }
  .muted, .empty { color: #5b6776; }
  .totals { display: flex; flex-wrap: wrap; gap: 0.75rem; margin: 1rem 0; padding: 0; list-style: none; }
  .totals li { border: 1px solid #d7dee7; border-radius: 6px; padding: 0.4rem 0.8rem; }
  .totals strong { display: block; font-size: 1.3rem; }
  svg.chart { max-width: 100%; height: auto; font-size: 12px; }
  svg.chart text { fill: #1b2430; }
  svg.chart text.muted, svg.chart tspan.muted { fill: #5b6776; }
  svg.chart .lane { stroke: #e3e8ee; }
  svg.chart .dim { opacity: 0.12; }
  .sequence { display: flex; flex-wrap: wrap; gap: 4px; padding: 0; list-style: none; font-size: 0.75rem; }
  .chip { border-left: 6px solid var(--c); background: #f3f5f8; padding: 1px 6px; border-radius: 3px; font-family: ui-monospace, monospace; }
  .chip.failed { background: #fde7e7; }
  .dot { display: inline-block; width: 0.7em; height: 0.7em; border-radius: 50%; background: var(--c); margin-right: 0.35em; }
  table { border-collapse: collapse; font-size: 0.85rem; margin: 0.5rem 0; }
  th, td { text-align: left; padding: 0.2rem 0.6rem; border-bottom: 1px solid #e3e8ee; vertical-align: top; }
  tr.failed td { background: #fde7e7; }
  pre { background: #f3f5f8; padding: 0.75rem; overflow-x: auto; font-size: 0.8rem; white-space: pre-wrap; word-break: break-word; }
  details { margin: 0.75rem 0; }
  summary { cursor: pointer; font-weight: 600; }
  button { font: inherit; padding: 0.3rem 0.8rem; border-radius: 4px; border: 1px solid #9aa5b1; background: #fff; cursor: pointer; }
  button:focus-visible, summary:focus-visible { outline: 3px solid #2563eb; outline-offset: 2px; }
  .legend { display: flex; flex-wrap: wrap; gap: 0.4rem; padding: 0; list-style: none; }
  .legend button[aria-pressed='true'] { background: #e8eefc; border-color: #2563eb; }
  footer { margin-top: 3rem; font-size: 0.8rem; color: #5b6776; }
</style>
</head>
<body>
<header>
<p class="kicker">Balancer Lab · run report</p>
<h1 data-testid="report-title">${escapeHtml(heading)}</h1>
<p class="muted">From ${escapeHtml(time(run.startedAt))} to ${escapeHtml(time(run.exportedAt))} (${escapeHtml(seconds(span))}) · proxy ${escapeHtml(run.proxy.driver)}${run.lesson ? ` · lesson ${escapeHtml(run.lesson)}` : ''}</p>
</header>
<ul class="totals" data-testid="report-totals" data-total="${run.counts.total}" data-failed="${run.counts.failed}">
  <li><strong>${run.counts.total}</strong>requests</li>
  <li><strong>${okCount}</strong>answered (below 500)</li>
  <li><strong>${run.counts.failed}</strong>failed (5xx or no answer)</li>
  <li><strong>${replicaCount}</strong>replica(s) answered</li>
</ul>
<section>
<h2>Requests per replica</h2>
<div data-testid="report-distribution">${distribution(run)}</div>
</section>
<section>
<h2>Which replica answered, over time</h2>
${run.requestsOmitted > 0 ? `<p class="muted">The timeline shows the newest ${run.requests.length} requests; ${run.requestsOmitted} older ones are counted above only.</p>` : ''}
<ul class="legend" aria-label="Highlight one replica">${Object.keys(run.counts.byReplica)
    .sort()
    .map((h) => `<li><button type="button" aria-pressed="false" data-replica="${escapeHtml(h)}"><span class="dot" style="--c:${color(h)}"></span>${escapeHtml(h)}</button></li>`)
    .join('')}</ul>
<div data-testid="report-timeline">${timeline(run)}</div>
${sequence(run)}
${requestTable(run)}
</section>
${health(run)}
${load(run)}
${connections(run)}
${configuration(run)}
${labLog(run)}
<section>
<h2>The data</h2>
<p>Everything above comes from the run's data, kept in this file. <button type="button" id="save-json">Save the data as JSON</button></p>
</section>
<footer>Made by Balancer Lab. This file is self-contained: it loads nothing from the network.</footer>
<script type="application/json" id="run-data">${scriptJson(run)}</script>
<script>
(function () {
  var pressed = null;
  var buttons = document.querySelectorAll('.legend button');
  function show(name) {
    pressed = pressed === name ? null : name;
    buttons.forEach(function (b) { b.setAttribute('aria-pressed', String(b.getAttribute('data-replica') === pressed)); });
    document.querySelectorAll('[data-testid=report-mark]').forEach(function (m) {
      m.classList.toggle('dim', pressed !== null && m.getAttribute('data-replica') !== pressed);
    });
  }
  buttons.forEach(function (b) { b.addEventListener('click', function () { show(b.getAttribute('data-replica')); }); });
  document.getElementById('save-json').addEventListener('click', function () {
    var text = document.getElementById('run-data').textContent;
    var a = document.createElement('a');
    a.href = URL.createObjectURL(new Blob([text], { type: 'application/json' }));
    a.download = 'balancer-lab-run.json';
    document.body.appendChild(a);
    a.click();
    a.remove();
  });
})();
</script>
</body>
</html>
`;
}
