// web_static page script: the auto-reload toggle, the "Fetch web_dynamic" button and the
// Session panel (login/logout on session_php, which the proxy serves under /session/).
// No framework, no external resources (the lab runs offline).
(function () {
  'use strict';

  var RELOAD_KEY = 'balancer-lab:auto-reload';
  /** Set just before an automatic reload, read (and cleared) by the page that follows. */
  var AUTO_RELOADED_KEY = 'balancer-lab:auto-reloaded';
  var SESSION_HISTORY_KEY = 'balancer-lab:session-history';
  /** Set when /session/ answered 404 (no session_php in this lab), cleared by any other answer. */
  var SESSION_ABSENT_KEY = 'balancer-lab:session-absent';
  var HISTORY_MAX = 10;

  /** Same hue as the server gives the page: FNV-1a over the UTF-16 code units, mod 360. */
  function hueOf(text) {
    var h = 0x811c9dc5;
    for (var i = 0; i < text.length; i++) {
      h ^= text.charCodeAt(i);
      h = Math.imul(h, 0x01000193) >>> 0;
    }
    return h % 360;
  }

  /** sessionStorage without surprises: blocked storage (some iframe settings) reads as empty. */
  function load(key) {
    try {
      return window.sessionStorage.getItem(key);
    } catch (e) {
      return null;
    }
  }

  function save(key, value) {
    try {
      if (value === null) window.sessionStorage.removeItem(key);
      else window.sessionStorage.setItem(key, value);
    } catch (e) {
      /* storage blocked: this page still works, it just forgets on reload */
    }
  }

  function readFlag() {
    return load(RELOAD_KEY) === 'on';
  }

  function writeFlag(on) {
    save(RELOAD_KEY, on ? 'on' : null);
  }

  // ---------------------------------------------------------------- auto-reload
  var toggle = document.getElementById('auto-reload');
  var reloadTimer = null;

  function schedule() {
    clearTimeout(reloadTimer);
    reloadTimer = null;
    if (toggle.checked) {
      reloadTimer = setTimeout(function () {
        save(AUTO_RELOADED_KEY, '1');
        window.location.reload();
      }, 1000);
    }
  }

  var autoReloaded = load(AUTO_RELOADED_KEY) === '1';
  save(AUTO_RELOADED_KEY, null);
  toggle.checked = readFlag();
  toggle.addEventListener('change', function () {
    writeFlag(toggle.checked);
    schedule();
  });
  schedule();

  // ---------------------------------------------------------------- fetch web_dynamic
  var button = document.getElementById('fetch-dynamic');
  var errorLine = document.getElementById('dynamic-error');
  var latest = document.getElementById('dynamic-latest');
  var latestHost = document.getElementById('dynamic-hostname');
  var latestInstance = document.getElementById('dynamic-instance');
  var latestJoke = document.getElementById('dynamic-joke');
  var history = document.getElementById('dynamic-history');
  var count = 0;

  /** Adds one answer (or failure) at the top of the history, keeping the last HISTORY_MAX. */
  function addHistory(parts, hue, failed) {
    count += 1;
    var li = document.createElement('li');
    if (failed) li.className = 'failed';
    else li.style.setProperty('--hue', String(hue));
    var n = document.createElement('span');
    n.className = 'n';
    n.textContent = '#' + count;
    li.append(n);
    parts.forEach(function (part) {
      li.append(' ', part);
    });
    history.prepend(li);
    while (history.children.length > HISTORY_MAX) history.lastElementChild.remove();
  }

  function showAnswer(body) {
    var host = document.createElement('strong');
    host.className = 'host';
    host.textContent = String(body.hostname);
    var id = document.createElement('code');
    id.textContent = String(body.instanceId).slice(0, 8);
    id.title = String(body.instanceId);
    addHistory([host, id], hueOf(String(body.hostname)), false);
  }

  /** A failed fetch shows in the error line and in the history, so failures in the rotation stay visible. */
  function showError(text) {
    errorLine.textContent = text;
    errorLine.hidden = false;
    var what = document.createElement('span');
    what.textContent = text.length > 80 ? text.slice(0, 80) + '…' : text;
    addHistory([what], 0, true);
  }

  async function fetchDynamic() {
    button.disabled = true;
    errorLine.hidden = true;
    try {
      var res = await fetch('/api/', { cache: 'no-store', headers: { Accept: 'application/json' } });
      var text = await res.text();
      if (!res.ok) {
        showError('HTTP ' + res.status + ' ' + res.statusText + (text ? ': ' + text.slice(0, 200) : ''));
        return;
      }
      var body;
      try {
        body = JSON.parse(text);
      } catch (e) {
        showError('The answer was not JSON: ' + text.slice(0, 200));
        return;
      }
      latestHost.textContent = body.hostname;
      latestHost.style.setProperty('--hue', String(hueOf(String(body.hostname))));
      latestInstance.textContent = body.instanceId;
      latestJoke.textContent = body.joke;
      latest.hidden = false;
      showAnswer(body);
    } catch (err) {
      showError('Request failed: ' + (err && err.message ? err.message : String(err)));
    } finally {
      button.disabled = false;
    }
  }

  button.addEventListener('click', fetchDynamic);

  // ---------------------------------------------------------------- session panel
  // GET /session/ on load, POST /session/login and /session/logout on the buttons. session_php
  // is another service, so these requests do not move web_static's rotation; the page itself
  // stays one request. The answers are kept (per tab) so reloads build up one history.
  var panel = document.getElementById('session-panel');
  var userLine = document.getElementById('session-user');
  var replicaLine = document.getElementById('session-replica');
  var loginButton = document.getElementById('login');
  var logoutButton = document.getElementById('logout');
  var sessionError = document.getElementById('session-error');
  var sessionHistory = document.getElementById('session-history');
  var backendLine = document.getElementById('session-backend');
  var note = document.getElementById('session-note');
  var noteText = document.getElementById('session-note-text');
  var recheck = document.getElementById('session-recheck');

  function readHistory() {
    try {
      var list = JSON.parse(load(SESSION_HISTORY_KEY) || '[]');
      return Array.isArray(list) ? list.slice(0, HISTORY_MAX) : [];
    } catch (e) {
      return [];
    }
  }

  var entries = readHistory();

  /** One history line: `#n action replica · knew my session · alice`, or the failure. */
  function renderEntry(entry) {
    var li = document.createElement('li');
    var n = document.createElement('span');
    n.className = 'n';
    n.textContent = '#' + entry.n;
    li.append(n, ' ' + entry.action + ' ');
    if (entry.failed) {
      li.className = 'failed';
      li.append(entry.text);
      return li;
    }
    li.style.setProperty('--hue', String(hueOf(entry.replica)));
    li.dataset.replica = entry.replica;
    li.dataset.known = entry.known;
    var host = document.createElement('strong');
    host.className = 'host';
    host.textContent = entry.replica;
    var known = document.createElement('span');
    known.className = entry.known === 'yes' ? 'known' : entry.known === 'no' ? 'unknown' : 'none';
    known.textContent =
      entry.known === 'yes'
        ? 'knew my session'
        : entry.known === 'no'
          ? 'did not know my session'
          : entry.action === 'login'
            ? 'new session'
            : 'no session';
    li.append(host, ' · ', known, ' · ' + (entry.user === null ? 'anonymous' : entry.user));
    return li;
  }

  function renderHistory() {
    sessionHistory.replaceChildren.apply(sessionHistory, entries.map(renderEntry));
  }

  function addSessionEntry(entry) {
    entry.n = (entries.length ? entries[0].n : 0) + 1;
    entries.unshift(entry);
    entries = entries.slice(0, HISTORY_MAX);
    save(SESSION_HISTORY_KEY, JSON.stringify(entries));
    renderHistory();
  }

  function setBusy(busy) {
    loginButton.disabled = busy;
    logoutButton.disabled = busy;
  }

  /** The lab runs no session_php (the route is missing): one quiet line instead of an error. */
  function showAbsent(text) {
    panel.hidden = true;
    noteText.textContent = text;
    note.hidden = false;
  }

  function showSession(body, backend) {
    panel.hidden = false;
    note.hidden = true;
    sessionError.hidden = true;
    var user = typeof body.user === 'string' ? body.user : null;
    userLine.textContent = user === null ? 'Anonymous' : 'Logged in as ' + user;
    userLine.classList.toggle('anonymous', user === null);
    replicaLine.textContent = String(body.hostname);
    replicaLine.style.setProperty('--hue', String(hueOf(String(body.hostname))));
    backendLine.textContent = backend || 'unknown (no X-Session-Backend header)';
  }

  function showSessionError(action, text) {
    panel.hidden = false;
    note.hidden = true;
    sessionError.textContent = text;
    sessionError.hidden = false;
    addSessionEntry({ action: action, failed: true, text: text.length > 80 ? text.slice(0, 80) + '…' : text });
  }

  /** One call to session_php through the proxy; `action` is what the history calls it. */
  async function sessionCall(action, method, url, body) {
    setBusy(true);
    try {
      var init = { method: method, credentials: 'same-origin', cache: 'no-store', headers: { Accept: 'application/json' } };
      if (body !== undefined) {
        init.headers['Content-Type'] = 'application/json';
        init.body = JSON.stringify(body);
      }
      var res = await fetch(url, init);
      var text = await res.text();
      if (res.status === 404) {
        save(SESSION_ABSENT_KEY, '1');
        showAbsent('No session app in this lab: /session/ answered 404, so the session panel is hidden.');
        return;
      }
      save(SESSION_ABSENT_KEY, null);
      if (!res.ok) {
        showSessionError(action, 'HTTP ' + res.status + ' ' + res.statusText + (text ? ': ' + text.slice(0, 200) : ''));
        return;
      }
      var answer;
      try {
        answer = JSON.parse(text);
      } catch (e) {
        answer = null;
      }
      if (!answer || typeof answer.hostname !== 'string') {
        showSessionError(action, 'The answer was not a session answer: ' + text.slice(0, 200));
        return;
      }
      showSession(answer, res.headers.get('X-Session-Backend'));
      addSessionEntry({
        action: action,
        replica: answer.hostname,
        // knew it / had never heard of it / no session to know (no cookie, logged out, or the new
        // session of a login: its sessionId is the new id, so it cannot tell "unknown" apart)
        known: answer.knownSession === true ? 'yes' : answer.sessionId && action === 'load' ? 'no' : 'none',
        user: typeof answer.user === 'string' ? answer.user : null,
      });
    } catch (err) {
      showSessionError(action, 'Request failed: ' + (err && err.message ? err.message : String(err)));
    } finally {
      setBusy(false);
    }
  }

  loginButton.addEventListener('click', function () {
    sessionCall('login', 'POST', '/session/login', { user: 'alice' });
  });
  logoutButton.addEventListener('click', function () {
    sessionCall('logout', 'POST', '/session/logout');
  });
  recheck.addEventListener('click', function () {
    sessionCall('load', 'GET', '/session/');
  });

  renderHistory();
  if (/(?:^|[?&])session=off(?:&|$)/.test(window.location.search)) {
    showAbsent('Session panel off (?session=off in the address).');
    recheck.hidden = true;
  } else if (autoReloaded && load(SESSION_ABSENT_KEY) === '1') {
    // While auto-reloading without session_php, asking again would send every other request of
    // the rotation to web_static's 404: the page would stop moving through the replicas in order.
    showAbsent('No session app in this lab (/session/ answered 404; not asked again while auto-reloading).');
  } else {
    sessionCall('load', 'GET', '/session/');
  }
})();
