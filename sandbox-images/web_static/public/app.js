// web_static page script: the auto-reload toggle and the "Fetch web_dynamic" button.
// No framework, no external resources (the lab runs offline).
(function () {
  'use strict';

  var RELOAD_KEY = 'balancer-lab:auto-reload';
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

  function readFlag() {
    try {
      return window.sessionStorage.getItem(RELOAD_KEY) === 'on';
    } catch (e) {
      return false; // storage blocked (e.g. some iframe settings): the toggle still works for this page
    }
  }

  function writeFlag(on) {
    try {
      if (on) window.sessionStorage.setItem(RELOAD_KEY, 'on');
      else window.sessionStorage.removeItem(RELOAD_KEY);
    } catch (e) {
      /* ignore: see readFlag */
    }
  }

  // ---------------------------------------------------------------- auto-reload
  var toggle = document.getElementById('auto-reload');
  var reloadTimer = null;

  function schedule() {
    clearTimeout(reloadTimer);
    reloadTimer = null;
    if (toggle.checked) {
      reloadTimer = setTimeout(function () {
        window.location.reload();
      }, 1000);
    }
  }

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
})();
