// YAML for the image code; see yaml.hpp.
#include "image/yaml.hpp"

#include "image/import-error.hpp"

#include <cstdio>

namespace lodge::image {
namespace {

using daemon::fail_errno;
using daemon::fail_invalid;
using json = nlohmann::json;

// Aliases make a node count once per use: nodes and scalar bytes are both counted per use, so
// a small document that repeats a large scalar (a "billion laughs") stops early.
struct Budget {
    size_t nodes = 1 << 20;
    size_t scalar_bytes = 64 << 20;
};

bool spend_scalar(Budget& budget, yaml_node_t* n) {
    if (n->data.scalar.length > budget.scalar_bytes)
        return false;
    budget.scalar_bytes -= n->data.scalar.length;
    return true;
}

bool node_to_json(yaml_document_t* doc, yaml_node_t* n, json& out, Budget& budget, int depth) {
    if (!n || budget.nodes == 0 || depth > 64)
        return false;
    budget.nodes--;
    switch (n->type) {
    case YAML_SCALAR_NODE:
        if (!spend_scalar(budget, n))
            return false;
        out = yaml_scalar_text(n);
        return true;
    case YAML_SEQUENCE_NODE:
        out = json::array();
        for (auto* i = n->data.sequence.items.start; i < n->data.sequence.items.top; i++) {
            json item;
            if (!node_to_json(doc, yaml_document_get_node(doc, *i), item, budget, depth + 1))
                return false;
            out.push_back(std::move(item));
        }
        return true;
    case YAML_MAPPING_NODE:
        out = json::object();
        for (auto* p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
            yaml_node_t* k = yaml_document_get_node(doc, p->key);
            if (!k || k->type != YAML_SCALAR_NODE || !spend_scalar(budget, k))
                return false;
            json value;
            if (!node_to_json(doc, yaml_document_get_node(doc, p->value), value, budget, depth + 1))
                return false;
            out[yaml_scalar_text(k)] = std::move(value);
        }
        return true;
    default:
        out = nullptr;
        return true;
    }
}

std::string scalar_json(const json& v) {
    if (v.is_string())
        return yaml_quoted(v.get<std::string>());
    if (v.is_null())
        return "null";
    return v.dump(); // numbers and booleans
}

void emit(std::string& out, const json& v, int indent) {
    std::string pad(static_cast<size_t>(indent), ' ');
    auto child = [&](const json& c) {
        if (c.is_object() && !c.empty()) {
            out += "\n";
            emit(out, c, indent + 2);
        } else if (c.is_array() && !c.empty()) {
            out += "\n";
            emit(out, c, indent);
        } else if (c.is_object()) {
            out += " {}\n";
        } else if (c.is_array()) {
            out += " []\n";
        } else {
            out += " " + scalar_json(c) + "\n";
        }
    };
    if (v.is_object()) {
        for (auto& [k, c] : v.items()) {
            out += pad + yaml_quoted(k) + ":";
            child(c);
        }
    } else if (v.is_array()) {
        for (auto& c : v) {
            out += pad + "-";
            if (c.is_object() && !c.empty()) {
                out += "\n";
                emit(out, c, indent + 2);
            } else {
                child(c);
            }
        }
    }
}

} // namespace

YamlDoc::~YamlDoc() {
    if (doc_ok_)
        yaml_document_delete(&doc_);
    if (parser_ok_)
        yaml_parser_delete(&parser_);
}

int YamlDoc::load(const std::string& text, const std::string& what, std::string& error) {
    if (!yaml_parser_initialize(&parser_))
        return fail_errno(error, ENOMEM, "Cannot parse " + what);
    parser_ok_ = true;
    yaml_parser_set_input_string(&parser_, reinterpret_cast<const unsigned char*>(text.data()),
                                 text.size());
    if (!yaml_parser_load(&parser_, &doc_))
        return fail_invalid(error, "Invalid " + what + ": line " +
                                       std::to_string(parser_.problem_mark.line + 1) + ": " +
                                       (parser_.problem ? parser_.problem : "syntax error"));
    doc_ok_ = true;
    yaml_node_t* top = root();
    if (!top || top->type != YAML_MAPPING_NODE)
        return fail_invalid(error, "Invalid " + what + ": not a mapping");
    return 0;
}

int yaml_to_json(const std::string& text, const std::string& what, json& out, std::string& error) {
    YamlDoc y;
    if (int r = y.load(text, what, error); r < 0)
        return r;
    Budget budget;
    if (!node_to_json(y.doc(), y.root(), out, budget, 0))
        return fail_invalid(error, "Invalid " + what + ": not a mapping of the expected shape");
    return 0;
}

std::string yaml_quoted(const std::string& v) {
    std::string out = "\"";
    for (unsigned char c : v) {
        if (c == '"' || c == '\\') {
            out += '\\';
            out += static_cast<char>(c);
        } else if (c < 0x20 || c == 0x7f) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\x%02x", c);
            out += buf;
        } else {
            out += static_cast<char>(c);
        }
    }
    return out + "\"";
}

std::string yaml_block(const json& value) {
    std::string out;
    emit(out, value, 0);
    return out;
}

} // namespace lodge::image
