// The two-wheeler proposal page.
(function () {
  'use strict';
  var $ = Portal.byId;
  var form = $('frmProposal');
  var summary = $('divValidationSummary');

  function fail(err) { Portal.showErrors(form, summary, [{ field: '', message: err.message }]); }

  // Any change after a premium calculation means it must be calculated again.
  function invalidateQuote() {
    var quote = form.elements.QuoteId;
    if (quote && quote.value) {
      quote.value = '';
      $('divPremiumDetails').hidden = true;
    }
  }
  form.addEventListener('input', invalidateQuote);
  form.addEventListener('change', invalidateQuote);

  var branch = null;
  Portal.safely('branch', function () { branch = Portal.dropdown('ddlBranch'); });
  Portal.safely('product', function () {
    Portal.dropdown('ddlProduct', function (code) {
      invalidateQuote();
      if (!branch) return;
      branch.enable(false);
      branch.clear('-- Select branch --');
      Portal.request('GET', '/TwoWheeler/GetBranches', { productCode: code }).then(function (items) {
        Portal.setItems('ddlBranch_listbox', items);
        branch.enable(true);
      }, fail);
    });
  });

  Portal.safely('client', function () {
    $('btnClientDetails').addEventListener('click', function () {
      $('ifrmClientDetails').src = '/Client/ClientDetails?_=' + Date.now();
      Portal.openWindow('divClientWindow', 'divClientOverlay');
    });
    $('btnClientWindowClose').addEventListener('click', function (e) {
      e.preventDefault();
      Portal.closeWindow('divClientWindow', 'divClientOverlay');
    });
    // Called by the client form in the iframe once the client is saved.
    window.clientSaved = function (clientId, name) {
      form.elements.ClientId.value = clientId;
      $('lblClientName').textContent = name;
      $('spnClientSaved').hidden = false;
      invalidateQuote();
      Portal.closeWindow('divClientWindow', 'divClientOverlay');
    };
  });

  Portal.safely('make-model', function () { Portal.autocomplete('txtMakeModel', 'hdnMakeModelCode', '/Master/MakeModels'); });
  Portal.safely('rto', function () { Portal.autocomplete('txtRTOCity', 'hdnRTOCode', '/Master/RtoLocations'); });
  Portal.safely('financier', function () { Portal.autocomplete('txtFinancier', 'hdnFinancierCode', '/Master/Financiers'); });

  Portal.safely('checks', function () {
    function syncNew() {
      form.elements.RegistrationNo.disabled = form.elements.IsNewVehicle.checked;
      if (form.elements.IsNewVehicle.checked) form.elements.RegistrationNo.value = '';
    }
    function syncFinancier() { $('divFinancierDetails').hidden = !form.elements.IsHypothecated.checked; }
    form.elements.IsNewVehicle.addEventListener('change', syncNew);
    form.elements.IsHypothecated.addEventListener('change', syncFinancier);
    syncNew();
    syncFinancier();
  });

  Portal.safely('idv', function () {
    $('btnFetchIDV').addEventListener('click', function () {
      var d = Portal.formData(form);
      Portal.request('POST', '/TwoWheeler/FetchIDV', d).then(function (r) {
        Portal.showErrors(form, summary, r.errors);
        if (!r.ok) return;
        form.elements.IDV.disabled = false;
        form.elements.IDV.value = r.idv;
        $('lblIDVRange').textContent = 'Allowed ' + r.min + ' to ' + r.max;
        invalidateQuote();
      }, fail);
    });
  });

  Portal.safely('premium', function () {
    $('btnCalculatePremium').addEventListener('click', function () {
      Portal.request('POST', '/TwoWheeler/CalculatePremium', Portal.formData(form)).then(function (r) {
        Portal.showErrors(form, summary, r.errors);
        if (!r.ok) return;
        form.elements.QuoteId.value = r.quoteId;
        $('lblODPremium').textContent = r.premium.own_damage;
        $('lblTPPremium').textContent = r.premium.third_party;
        $('lblAddOnPremium').textContent = r.premium.add_ons;
        $('lblGST').textContent = r.premium.gst;
        $('lblTotalPremium').textContent = r.premium.total;
        $('divPremiumDetails').hidden = false;
      }, fail);
    });
  });

  Portal.safely('save', function () {
    $('btnSave').addEventListener('click', function () {
      if (!window.confirm('Are you sure you want to save the proposal?')) return;
      Portal.request('POST', '/TwoWheeler/SaveProposal', Portal.formData(form)).then(function (r) {
        Portal.showErrors(form, summary, r.errors);
        if (!r.ok) return;
        $('lblProposalNo').textContent = r.proposalNo;
        $('divProposalResult').hidden = false;
        $('btnSave').disabled = true;
        $('divProposalResult').scrollIntoView();
      }, fail);
    });
  });

  Portal.safely('payment-link', function () {
    $('btnSendPaymentLink').addEventListener('click', function () {
      if (!window.confirm("Send the payment link to the customer's mobile and email?")) return;
      var no = $('lblProposalNo').textContent;
      Portal.request('POST', '/TwoWheeler/SendPaymentLink', { ProposalNo: no }).then(function (r) {
        $('lblPaymentLinkStatus').textContent = r.message;
        if (r.ok) $('btnSendPaymentLink').disabled = true;
      }, fail);
    });
  });
})();
