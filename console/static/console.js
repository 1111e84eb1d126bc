// Small conveniences on top of plain forms: confirmations, copy buttons, and an upload progress
// bar. Every form works without this script.
document.addEventListener("click", function (ev) {
  var el = ev.target.closest("[data-confirm]");
  if (el && !window.confirm(el.getAttribute("data-confirm"))) {
    ev.preventDefault();
  }
  var copy = ev.target.closest("[data-copy]");
  if (copy) {
    copyField(copy);
  }
});

// copyField copies the text of the field that a button's data-copy names, and says whether that
// worked on the button and in the element that its data-copy-status names, if any. The text stays
// selected, so that it can be copied by hand where the browser refuses.
function copyField(button) {
  var input = document.getElementById(button.getAttribute("data-copy"));
  var status = document.getElementById(button.getAttribute("data-copy-status") || "");
  var say = function (copied) {
    button.textContent = copied ? "Copied" : "Not copied";
    if (status) {
      status.textContent = copied ? "Copied to the clipboard." :
        "The browser did not let devreg copy it. The text is selected: press Ctrl+C (⌘C on a Mac) to copy it.";
    }
  };
  var byCommand = function () {
    input.focus();
    input.select();
    var copied = false;
    try {
      copied = document.execCommand("copy");
    } catch (e) {
      copied = false;
    }
    say(copied);
  };
  input.focus();
  input.select();
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(input.value).then(function () { say(true); }, byCommand);
  } else {
    byCommand();
  }
}

// A select whose data-minlength-of names a field sets that field's minlength from the chosen
// option's data-minlength (the device type's minimum secret length), so the browser checks it
// before sending; the server checks it again.
document.addEventListener("change", function (ev) {
  var select = ev.target.closest("select[data-minlength-of]");
  if (!select) {
    return;
  }
  var option = select.options[select.selectedIndex];
  var field = document.getElementById(select.getAttribute("data-minlength-of"));
  if (option && field && option.getAttribute("data-minlength")) {
    field.minLength = Number(option.getAttribute("data-minlength"));
    var help = document.getElementById(select.getAttribute("data-minlength-help") || "");
    var text = help && help.querySelector("[data-minlength-text]");
    if (text) {
      text.textContent = option.getAttribute("data-minlength");
    }
  }
});

document.addEventListener("DOMContentLoaded", function () {
  var form = document.getElementById("upload-form");
  if (!form || !window.FormData || !window.XMLHttpRequest) {
    return;
  }
  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    var box = document.getElementById("upload-progress");
    var bar = document.getElementById("progress-bar");
    var text = document.getElementById("progress-text");
    var button = form.querySelector("button[type=submit]");
    box.hidden = false;
    button.disabled = true;
    var xhr = new XMLHttpRequest();
    xhr.open("POST", form.action);
    xhr.upload.addEventListener("progress", function (e) {
      if (e.lengthComputable) {
        var pct = Math.round((e.loaded / e.total) * 100);
        bar.value = pct;
        text.textContent = pct + "% of " + (e.total / 1048576).toFixed(1) + " MB";
      }
    });
    xhr.upload.addEventListener("load", function () {
      bar.removeAttribute("value");
      text.textContent = "Uploaded; checking and registering the devices…";
    });
    var file = form.querySelector("input[type=file]").files[0];
    xhr.addEventListener("load", function () {
      document.open();
      document.write(xhr.responseText);
      document.close();
      history.replaceState(null, "", xhr.responseURL || form.action);
      // A refused upload's page offers all its problems as a download, which checks the file
      // again: choose the file just sent for it.
      var again = document.getElementById("problems-file");
      if (again && file && window.DataTransfer) {
        try {
          var chosen = new DataTransfer();
          chosen.items.add(file);
          again.files = chosen.files;
        } catch (e) {
          // the user chooses the file again
        }
      }
    });
    xhr.addEventListener("error", function () {
      text.textContent = "The upload failed: the server could not be reached. Nothing was registered; try again.";
      button.disabled = false;
    });
    xhr.send(new FormData(form));
  });
});

// A checkbox with data-select-all ticks or clears, in its form, every checkbox of that name: the
// Devices page's "select all on this page".
document.addEventListener("change", function (ev) {
  var all = ev.target.closest("[data-select-all]");
  if (!all || !all.form) {
    return;
  }
  var boxes = all.form.querySelectorAll('input[type=checkbox][name="' + all.getAttribute("data-select-all") + '"]');
  for (var i = 0; i < boxes.length; i++) {
    boxes[i].checked = all.checked;
  }
});
