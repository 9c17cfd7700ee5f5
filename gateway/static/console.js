// The console's only script, and an optional one: every page works without it.
//
// Live pages (`data-live-every="<seconds>"` on <main>) re-read themselves from the server on
// that beat and swap in each element marked `data-live` (matched by id), so the server's
// templates stay the one place that says how a row looks. The `#live-status` element is one of
// them: the server stamps the time it rendered; when a read fails the old stamp stays and says so.
(function () {
  'use strict';
  var main = document.querySelector('main[data-live-every]');
  if (!main || !window.fetch || !window.DOMParser) return;
  var every = Math.max(1, Number(main.getAttribute('data-live-every')) || 5) * 1000;
  var timer = null;

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(refresh, every);
  }

  function failed(why) {
    var status = document.getElementById('live-status');
    if (status) {
      status.classList.add('stale');
      status.setAttribute('data-problem', why);
      var note = status.querySelector('.problem');
      if (!note) {
        note = document.createElement('span');
        note.className = 'problem';
        status.appendChild(note);
      }
      note.textContent = ' · could not update (' + why + '); retrying';
    }
    schedule();
  }

  function refresh() {
    if (document.hidden) return schedule();
    fetch(window.location.href, { credentials: 'same-origin', cache: 'no-store', headers: { Accept: 'text/html' } })
      .then(function (response) {
        if (response.redirected) {
          // The search now names exactly one conversation, or the session ended: follow it.
          window.location.assign(response.url);
          return null;
        }
        if (!response.ok) throw new Error('HTTP ' + response.status);
        return response.text();
      })
      .then(function (html) {
        if (html === null) return;
        var fresh = new DOMParser().parseFromString(html, 'text/html');
        document.querySelectorAll('[data-live]').forEach(function (element) {
          var replacement = element.id && fresh.getElementById(element.id);
          if (replacement) element.replaceWith(document.importNode(replacement, true));
        });
        schedule();
      })
      .catch(function (error) { failed(error.message || 'network error'); });
  }

  document.addEventListener('visibilitychange', function () {
    if (!document.hidden) refresh();
  });
  schedule();
})();
