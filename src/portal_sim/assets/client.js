// The client-details form inside the proposal page's modal window.
(function () {
  'use strict';
  var $ = Portal.byId;
  var form = $('frmClient');

  Portal.safely('pincode', function () {
    $('btnSearchPincode').addEventListener('click', function () {
      Portal.request('GET', '/Master/Pincode', { pincode: form.elements.Pincode.value.trim() }).then(function (r) {
        if (!r.ok) {
          Portal.showErrors(form, $('divClientSummary'), [{ field: 'Pincode', message: r.message }]);
          return;
        }
        Portal.showErrors(form, $('divClientSummary'), []);
        form.elements.City.value = r.city;
        form.elements.StateCode.value = r.stateCode;
        $('lblState').textContent = r.state;
      });
    });
    form.elements.Pincode.addEventListener('input', function () {
      form.elements.City.value = '';
      form.elements.StateCode.value = '';
      $('lblState').textContent = '';
    });
  });

  Portal.safely('save', function () {
    $('btnSaveClient').addEventListener('click', function () {
      Portal.request('POST', '/Client/SaveClient', Portal.formData(form)).then(function (r) {
        Portal.showErrors(form, $('divClientSummary'), r.errors);
        if (r.ok && window.parent && window.parent.clientSaved) window.parent.clientSaved(r.clientId, r.name);
      }, function (err) {
        Portal.showErrors(form, $('divClientSummary'), [{ field: '', message: err.message }]);
      });
    });
  });
})();
