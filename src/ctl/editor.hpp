// The editor session of lodgectl file edit and config edit: a temporary file, $VISUAL,
// $EDITOR or vi on it, and the edit handed back; a refused edit may be offered again, as
// lxc config edit does.
#pragma once

#include <functional>
#include <string>

namespace lodge::ctl {

struct EditSession {
    const char* suffix = "";                   // of the temporary file's name (".yaml")
    std::function<bool(int fd)> fill;          // writes the text to edit; false: give up
    std::function<std::string(int fd)> accept; // the edited file; "" or why it was refused
    bool reopen = false;                       // a refused edit: offer the editor again
    std::string what = "the file";             // "is unchanged" when the editor fails
};

// 0 when an edit was accepted, else 1 (the reason printed).
int edit_in_editor(const EditSession& s);

} // namespace lodge::ctl
