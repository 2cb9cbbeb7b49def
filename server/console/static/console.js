// walhook console: refresh the numbers of the page from /api/v1/status
// every two seconds, without a reload. Elements name what they show:
// data-top="field" (of the status), data-f="field" inside an element with
// data-sink="name" or data-backfill="id", and data-fmt how to write it.
(function () {
  'use strict';
  var every = 2000;

  function bytes(n) {
    if (n < 1024) return n + ' B';
    var units = ['KiB', 'MiB', 'GiB', 'TiB', 'PiB'], i = -1;
    while (n >= 1024 && i + 1 < units.length) { n /= 1024; i++; }
    return n.toFixed(1) + ' ' + units[i];
  }
  function secs(f) {
    if (f < 10) return f.toFixed(1) + ' s';
    if (f < 60) return Math.floor(f) + ' s';
    var pad = function (x) { return (x < 10 ? '0' : '') + x; };
    f = Math.floor(f);
    if (f < 3600) return Math.floor(f / 60) + 'm ' + pad(f % 60) + 's';
    return Math.floor(f / 3600) + 'h ' + pad(Math.floor(f % 3600 / 60)) + 'm';
  }
  var fmt = {
    text: function (v) { return String(v); },
    num: function (v) { return Math.round(v).toLocaleString('en-US'); },
    rate: function (v) { return v.toFixed(1) + '/s'; },
    bytes: bytes,
    secs: secs,
    ready: function (v) { return v ? 'ready' : 'not ready'; },
    connected: function (v) { return v ? 'streaming' : 'not connected'; }
  };

  function show(el, v) {
    var t;
    if (v === undefined || v === null || v === '') {
      t = el.dataset.f === 'paused_reason' || el.dataset.top === 'reason' || el.dataset.f === 'last_error' ? '' : '–';
    } else {
      t = (fmt[el.dataset.fmt] || fmt.text)(v);
    }
    if (el.textContent !== t) el.textContent = t;
    if (typeof v === 'boolean') el.dataset.v = String(v);
    if (el.dataset.f === 'state') el.className = 'state state-' + v;
  }

  function get(obj, path) {
    return path.split('.').reduce(function (o, k) { return o == null ? undefined : o[k]; }, obj);
  }

  function eta(b) {
    if (b.state !== 'running' || !(b.rows_per_sec > 0) || b.rows_estimate <= b.rows_done) return '–';
    return secs((b.rows_estimate - b.rows_done) / b.rows_per_sec);
  }

  function backfill(row, b) {
    row.querySelectorAll('form.cancel').forEach(function (f) { f.hidden = b.state !== 'running'; });
    row.querySelectorAll('[data-f]').forEach(function (el) {
      var f = el.dataset.f;
      if (f === 'progress') {
        if (b.state === 'done') { el.max = 1; el.value = 1; }
        else if (b.rows_estimate > 0) { el.max = b.rows_estimate; el.value = Math.min(b.rows_done, b.rows_estimate); }
        else el.removeAttribute('value');
      } else if (f === 'percent') {
        var p = b.state === 'done' ? 100 : (b.rows_estimate > 0 ? Math.min(Math.floor(b.rows_done * 100 / b.rows_estimate), 100) : 0);
        show(el, p + '%');
      } else if (f === 'eta') {
        show(el, eta(b));
      } else {
        show(el, b[f]);
      }
    });
  }

  function apply(st) {
    document.querySelectorAll('[data-top]').forEach(function (el) { show(el, get(st, el.dataset.top)); });
    var sinks = {};
    (st.sinks || []).forEach(function (k) { sinks[k.name] = k; });
    document.querySelectorAll('[data-sink]').forEach(function (row) {
      var k = sinks[row.dataset.sink];
      if (!k) return;
      row.querySelectorAll('[data-f]').forEach(function (el) { show(el, k[el.dataset.f]); });
    });
    var bfs = {};
    (st.backfills || []).forEach(function (b) { bfs[b.id] = b; });
    document.querySelectorAll('[data-backfill]').forEach(function (row) {
      var b = bfs[row.dataset.backfill];
      if (b) backfill(row, b);
    });
  }

  function poll() {
    var mark = document.getElementById('poll');
    fetch('/api/v1/status', { credentials: 'same-origin', headers: { 'Accept': 'application/json' }, cache: 'no-store' })
      .then(function (r) {
        if (!r.ok) throw new Error('status answered ' + r.status);
        return r.json();
      })
      .then(function (st) {
        apply(st);
        document.body.classList.remove('stale');
        document.body.dataset.polled = String(Date.now());
        if (mark) mark.textContent = 'updated ' + new Date().toLocaleTimeString();
      })
      .catch(function (e) {
        document.body.classList.add('stale');
        if (mark) mark.textContent = 'not updated: ' + e.message;
      })
      .finally(function () { setTimeout(poll, every); });
  }

  if (document.getElementById('poll')) setTimeout(poll, every);
})();
