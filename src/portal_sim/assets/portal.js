// Shared behaviour of the simulated portal: a small stand-in for the Kendo
// UI widgets (drop-down, auto-complete, window, loading mask), the XHR helper
// and the validation-message display. Plain DOM, so WebDriver drives it with
// real clicks and keystrokes.
(function () {
  'use strict';
  var Portal = (window.Portal = {});

  function byId(id) { return document.getElementById(id); }
  Portal.byId = byId;

  // Runs a widget's set-up without letting one missing element (for example
  // an id renamed by a fault switch) break the rest of the page.
  Portal.safely = function (name, fn) {
    try { fn(); } catch (e) { if (window.console) console.warn('portal: ' + name + ': ' + e); }
  };

  // ---- loading mask -------------------------------------------------------
  var maskCount = 0;
  var maskEl = null;
  function noDelays() {
    return document.body.getAttribute('data-no-delays') === '1';
  }
  function maskMs() {
    var hold = parseInt(document.body.getAttribute('data-mask-hold-ms'), 10) || 0;
    if (hold > 0) return hold;
    return noDelays() ? 0 : 200 + Math.floor(Math.random() * 200);
  }
  Portal.showMask = function () {
    maskCount += 1;
    if (!maskEl) {
      maskEl = document.createElement('div');
      maskEl.className = 'k-loading-mask';
      maskEl.innerHTML = '<span class="k-loading-text">Loading...</span>' +
        '<div class="k-loading-image"></div><div class="k-loading-color"></div>';
      document.body.appendChild(maskEl);
    }
  };
  Portal.hideMask = function () {
    // Kendo keeps the mask up a moment after the answer arrives.
    setTimeout(function () {
      maskCount = Math.max(0, maskCount - 1);
      if (maskCount === 0 && maskEl) { maskEl.parentNode.removeChild(maskEl); maskEl = null; }
    }, maskMs());
  };

  // ---- requests -----------------------------------------------------------
  function encode(data) {
    var parts = [];
    Object.keys(data || {}).forEach(function (k) {
      parts.push(encodeURIComponent(k) + '=' + encodeURIComponent(data[k]));
    });
    return parts.join('&');
  }
  // Sends a request and resolves with the JSON answer. A logged-out session
  // answers with the login page (HTML, status 200) like ASP.NET does; the
  // page then reloads so the login form shows.
  Portal.request = function (method, url, data, quiet) {
    if (!quiet) Portal.showMask();
    var opts = { method: method, credentials: 'same-origin',
      headers: { 'X-Requested-With': 'XMLHttpRequest' } };
    if (method === 'POST') {
      opts.headers['Content-Type'] = 'application/x-www-form-urlencoded; charset=UTF-8';
      opts.body = encode(data);
    } else if (data) {
      url += (url.indexOf('?') < 0 ? '?' : '&') + encode(data);
    }
    return fetch(url, opts).then(function (resp) {
      if (!quiet) Portal.hideMask();
      var type = resp.headers.get('Content-Type') || '';
      if (type.indexOf('application/json') === 0) return resp.json();
      if (resp.status === 200) { window.top.location.reload(); }
      throw new Error('The server answered ' + resp.status + '. Please try again.');
    }, function (err) {
      if (!quiet) Portal.hideMask();
      throw err;
    });
  };

  // Collects a form's named fields; check boxes post "true"/"false" as
  // ASP.NET MVC's check-box helper does.
  Portal.formData = function (form) {
    var data = {};
    Array.prototype.forEach.call(form.elements, function (el) {
      if (!el.name) return;
      if (el.type === 'checkbox') data[el.name] = el.checked ? 'true' : 'false';
      else data[el.name] = el.value;
    });
    return data;
  };

  // ---- validation messages ------------------------------------------------
  Portal.showErrors = function (root, summary, errors) {
    Array.prototype.forEach.call(root.querySelectorAll('[data-valmsg-for]'), function (span) {
      span.textContent = '';
      span.className = 'field-validation-valid';
    });
    var items = [];
    (errors || []).forEach(function (e) {
      var span = root.querySelector('[data-valmsg-for="' + e.field + '"]');
      if (span) { span.textContent = e.message; span.className = 'field-validation-error'; }
      items.push('<li>' + escapeHtml(e.message) + '</li>');
    });
    if (summary) {
      summary.className = items.length ? 'validation-summary-errors' : 'validation-summary-valid';
      summary.innerHTML = items.length ? '<ul>' + items.join('') + '</ul>' : '';
    }
  };
  function escapeHtml(s) {
    return String(s).replace(/[&<>"']/g, function (c) {
      return { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c];
    });
  }
  Portal.escapeHtml = escapeHtml;

  // ---- drop-down (span[aria-owns=X_listbox] opening ul#X_listbox) ---------
  function closeLists(except) {
    Array.prototype.forEach.call(document.querySelectorAll('.k-list-container.k-state-open'), function (c) {
      if (c !== except) c.classList.remove('k-state-open');
    });
  }
  document.addEventListener('click', function (e) {
    if (!e.target.closest || !e.target.closest('.k-dropdown, .k-list-container, .k-autocomplete')) closeLists(null);
  });

  Portal.setItems = function (listId, items) {
    var ul = byId(listId);
    ul.innerHTML = items.map(function (it) {
      return '<li class="k-item" role="option" data-value="' + escapeHtml(it.code) + '">' + escapeHtml(it.name) + '</li>';
    }).join('');
  };

  Portal.dropdown = function (id, onChange) {
    var wrapper = document.querySelector('span[aria-owns="' + id + '_listbox"]');
    var list = byId(id + '_listbox');
    var container = list.parentNode;
    var hidden = byId(id);
    wrapper.addEventListener('click', function () {
      if (wrapper.classList.contains('k-state-disabled')) return;
      var open = container.classList.contains('k-state-open');
      closeLists(container);
      container.classList.toggle('k-state-open', !open);
    });
    list.addEventListener('click', function (e) {
      var li = e.target.closest('li');
      if (!li) return;
      hidden.value = li.getAttribute('data-value');
      wrapper.querySelector('.k-input').textContent = li.textContent;
      Array.prototype.forEach.call(list.children, function (x) { x.classList.toggle('k-state-selected', x === li); });
      container.classList.remove('k-state-open');
      if (onChange) onChange(hidden.value, li.textContent);
    });
    return {
      enable: function (on) { wrapper.classList.toggle('k-state-disabled', !on); },
      clear: function (placeholder) { hidden.value = ''; wrapper.querySelector('.k-input').textContent = placeholder; }
    };
  };

  // ---- auto-complete: suggestions load after typing ------------------------
  Portal.autocomplete = function (inputId, hiddenId, url, onChange) {
    var input = byId(inputId);
    var hidden = byId(hiddenId);
    var list = byId(inputId + '_listbox');
    var container = list.parentNode;
    var timer = null;
    var seq = 0;
    input.addEventListener('input', function () {
      hidden.value = '';
      if (onChange) onChange();
      clearTimeout(timer);
      var q = input.value.trim();
      if (q.length < 3) { container.classList.remove('k-state-open'); return; }
      timer = setTimeout(function () {
        var mine = ++seq;
        input.parentNode.classList.add('k-loading');
        Portal.request('GET', url, { q: q }, true).then(function (items) {
          if (mine !== seq) return;
          input.parentNode.classList.remove('k-loading');
          Portal.setItems(inputId + '_listbox', items);
          closeLists(container);
          container.classList.toggle('k-state-open', items.length > 0);
        }, function () { input.parentNode.classList.remove('k-loading'); });
      }, noDelays() ? 0 : 250);
    });
    list.addEventListener('click', function (e) {
      var li = e.target.closest('li');
      if (!li) return;
      input.value = li.textContent;
      hidden.value = li.getAttribute('data-value');
      container.classList.remove('k-state-open');
      if (onChange) onChange();
    });
  };

  // ---- modal window ---------------------------------------------------------
  Portal.openWindow = function (windowId, overlayId) {
    byId(overlayId).hidden = false;
    byId(windowId).hidden = false;
  };
  Portal.closeWindow = function (windowId, overlayId) {
    byId(overlayId).hidden = true;
    byId(windowId).hidden = true;
  };

  // ---- menu and logout, on every logged-in page --------------------------------
  document.addEventListener('DOMContentLoaded', function () {
    Array.prototype.forEach.call(document.querySelectorAll('.menu-item.has-sub'), function (item) {
      item.addEventListener('mouseenter', function () { item.classList.add('open'); });
      item.addEventListener('mouseleave', function () { item.classList.remove('open'); });
    });
    var logout = byId('divLogout');
    if (logout) logout.addEventListener('click', function () { window.location.href = '/Login/Logout'; });
    var close = byId('btnPopupClose');
    if (close) close.addEventListener('click', function (e) {
      e.preventDefault();
      byId('divPopup').hidden = true;
      byId('divPopupOverlay').hidden = true;
    });
  });
})();
