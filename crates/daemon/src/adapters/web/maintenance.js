// Baton web interface: upload progress for the Backup and Upgrade forms. Progressive
// enhancement only: without this script the forms post as usual and the answer page shows.
"use strict";
document.querySelectorAll("form[data-upload]").forEach(function (form) {
  form.addEventListener("submit", function (event) {
    if (!window.FormData || !window.XMLHttpRequest) return;
    event.preventDefault();
    var widgets = form.querySelector(".upload-progress");
    var bar = form.querySelector(".upload-progress progress");
    var status = form.querySelector(".upload-status");
    var button = form.querySelector("button[type=submit]");
    widgets.hidden = false;
    button.disabled = true;
    var request = new XMLHttpRequest();
    request.open("POST", form.action);
    request.upload.onprogress = function (progress) {
      if (!progress.lengthComputable) return;
      bar.max = progress.total;
      bar.value = progress.loaded;
      status.textContent = Math.floor((100 * progress.loaded) / progress.total) + "% uploaded";
    };
    request.upload.onload = function () {
      status.textContent = "Uploaded; checking…";
    };
    request.onload = function () {
      // The answer is a whole page (result, refusal or confirmation): show it.
      document.open();
      document.write(request.responseText);
      document.close();
    };
    request.onerror = function () {
      status.textContent = "The upload failed: the connection was lost. Try again.";
      button.disabled = false;
    };
    request.send(new FormData(form));
  });
});
