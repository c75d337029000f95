#include "runtime/device-bpf.hpp"
#include "common/log.hpp"

#include <bpf/bpf.h>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace lodge::runtime {

namespace {

// The registers the program keeps its inputs in (r1 holds the context on entry).
constexpr uint8_t reg_ret = BPF_REG_0, reg_ctx = BPF_REG_1, reg_access = BPF_REG_2,
                  reg_type = BPF_REG_3, reg_major = BPF_REG_4, reg_minor = BPF_REG_5;

bpf_insn insn(uint8_t code, uint8_t dst, uint8_t src, int16_t off, int32_t imm) {
    bpf_insn i{};
    i.code = code;
    i.dst_reg = dst & 0xf;
    i.src_reg = src & 0xf;
    i.off = off;
    i.imm = imm;
    return i;
}

bpf_insn load_u32(uint8_t dst, uint8_t base, int16_t off) {
    return insn(BPF_LDX | BPF_MEM | BPF_W, dst, base, off, 0);
}
bpf_insn mov32(uint8_t dst, uint8_t src) {
    return insn(BPF_ALU | BPF_MOV | BPF_X, dst, src, 0, 0);
}
bpf_insn alu32_imm(uint8_t op, uint8_t dst, int32_t imm) {
    return insn(BPF_ALU | op | BPF_K, dst, 0, 0, imm);
}
bpf_insn mov64_imm(uint8_t dst, int32_t imm) {
    return insn(BPF_ALU64 | BPF_MOV | BPF_K, dst, 0, 0, imm);
}
bpf_insn jne_imm(uint8_t dst, int32_t imm, int16_t off) {
    return insn(BPF_JMP | BPF_JNE | BPF_K, dst, 0, off, imm);
}
bpf_insn exit_insn() {
    return insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0);
}

} // namespace

std::vector<bpf_insn> device_program(std::span<const DeviceRule> rules) {
    std::vector<bpf_insn> p;
    // struct bpf_cgroup_dev_ctx: access_type = (BPF_DEVCG_ACC_* << 16) | BPF_DEVCG_DEV_*,
    // then major and minor.
    p.push_back(load_u32(reg_access, reg_ctx, offsetof(bpf_cgroup_dev_ctx, access_type)));
    p.push_back(mov32(reg_type, reg_access));
    p.push_back(alu32_imm(BPF_AND, reg_type, 0xffff));
    p.push_back(alu32_imm(BPF_RSH, reg_access, 16));
    p.push_back(load_u32(reg_major, reg_ctx, offsetof(bpf_cgroup_dev_ctx, major)));
    p.push_back(load_u32(reg_minor, reg_ctx, offsetof(bpf_cgroup_dev_ctx, minor)));
    for (const DeviceRule& r : rules) {
        // Each rule is one block; every mismatch jumps to the next block.
        std::vector<bpf_insn> checks;
        checks.push_back(
            jne_imm(reg_type, r.type == 'b' ? BPF_DEVCG_DEV_BLOCK : BPF_DEVCG_DEV_CHAR, 0));
        if (r.major != DeviceRule::any)
            checks.push_back(jne_imm(reg_major, static_cast<int32_t>(r.major), 0));
        if (r.minor != DeviceRule::any)
            checks.push_back(jne_imm(reg_minor, static_cast<int32_t>(r.minor), 0));
        // Allowed only if every access bit asked for is in the rule.
        checks.push_back(mov32(reg_ret, reg_access));
        checks.push_back(alu32_imm(BPF_AND, reg_ret, static_cast<int32_t>(~r.access)));
        checks.push_back(jne_imm(reg_ret, 0, 0));
        checks.push_back(mov64_imm(reg_ret, 1));
        checks.push_back(exit_insn());
        for (size_t i = 0; i < checks.size(); i++)
            if (checks[i].code == (BPF_JMP | BPF_JNE | BPF_K))
                checks[i].off = static_cast<int16_t>(checks.size() - i - 1);
        p.insert(p.end(), checks.begin(), checks.end());
    }
    p.push_back(mov64_imm(reg_ret, 0));
    p.push_back(exit_insn());
    return p;
}

namespace {

// BPF_PROG_LOAD by the system call itself: libbpf's bpf_prog_load first loads two probe
// programs (is BPF memory charged to the memcg? are program names known?), each through the
// verifier, once per process, and a supervisor is a new process on every start.
int prog_load(const std::vector<bpf_insn>& prog, char* log, uint32_t log_size) {
    union bpf_attr attr {};
    attr.prog_type = BPF_PROG_TYPE_CGROUP_DEVICE;
    attr.expected_attach_type = BPF_CGROUP_DEVICE;
    attr.insns = reinterpret_cast<uint64_t>(prog.data());
    attr.insn_cnt = static_cast<uint32_t>(prog.size());
    static const char license[] = "Apache-2.0";
    attr.license = reinterpret_cast<uint64_t>(license);
    std::strncpy(attr.prog_name, "lodge_devices", sizeof attr.prog_name - 1);
    if (log) { // the verifier's words, asked for only after a refusal (as libbpf does)
        attr.log_level = 1;
        attr.log_buf = reinterpret_cast<uint64_t>(log);
        attr.log_size = log_size;
    }
    int fd = -1;
    // The verifier answers EAGAIN when a signal is pending; libbpf tries 5 times too.
    for (int attempt = 0; attempt < 5; attempt++) {
        fd = static_cast<int>(::syscall(SYS_bpf, BPF_PROG_LOAD, &attr, sizeof attr));
        if (fd >= 0 || errno != EAGAIN)
            break;
    }
    return fd;
}

} // namespace

Result<Fd> load_device_program(std::span<const DeviceRule> rules) {
    std::vector<bpf_insn> prog = device_program(rules);
    int fd = prog_load(prog, nullptr, 0);
    if (fd < 0 && errno == EPERM) {
        // Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK instead of the memcg. The
        // old limit is put back at once: the container inherits the supervisor's limits.
        struct rlimit old {};
        struct rlimit unlimited {
            RLIM_INFINITY, RLIM_INFINITY
        };
        if (::getrlimit(RLIMIT_MEMLOCK, &old) == 0 &&
            ::setrlimit(RLIMIT_MEMLOCK, &unlimited) == 0) {
            fd = prog_load(prog, nullptr, 0);
            int err = errno;
            ::setrlimit(RLIMIT_MEMLOCK, &old);
            errno = err;
        }
    }
    if (fd < 0) {
        int err = errno;
        char verifier_log[4096] = "";
        if (err == EACCES || err == EINVAL) {
            // Refused a moment ago; only the log is wanted, should this one pass after all.
            if (int again = prog_load(prog, verifier_log, sizeof verifier_log); again >= 0)
                ::close(again);
        }
        return log_error_value(err, "Failed to load the device allow-list program%s%s",
                               verifier_log[0] ? ": " : "", verifier_log);
    }
    return Fd(fd);
}

namespace {
Fd preloaded_default_program;
}

void preload_device_program() {
    Fd loaded(prog_load(device_program(device_allow_list()), nullptr, 0));
    if (loaded)
        preloaded_default_program.reset(::fcntl(loaded.get(), F_DUPFD_CLOEXEC, 10));
}

void drop_preloaded_device_program() {
    preloaded_default_program.reset();
}

Result<> attach_device_policy(const std::string& cgroup_dir, std::span<const DeviceRule> rules) {
    Fd cgroup(::open(cgroup_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!cgroup)
        return log_error_value(errno, "Failed to open the cgroup %s", cgroup_dir.c_str());
    // What an earlier supervisor of this cgroup attached (it may have crashed before removing
    // the cgroup); replaced only once the new program is in force.
    uint32_t old_ids[64];
    uint32_t old_count = 64, attach_flags = 0;
    if (bpf_prog_query(cgroup.get(), BPF_CGROUP_DEVICE, 0, &attach_flags, old_ids, &old_count) < 0)
        old_count = 0;
    bool default_rules =
        rules.data() == device_allow_list().data() && rules.size() == device_allow_list().size();
    Result<Fd> prog = default_rules && preloaded_default_program
                          ? Result<Fd>(std::move(preloaded_default_program))
                          : load_device_program(rules);
    if (!prog)
        return prog.error();
    if (bpf_prog_attach(prog->get(), cgroup.get(), BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI) < 0)
        return log_error_value(errno, "Failed to attach the device allow-list to %s",
                               cgroup_dir.c_str());
    for (uint32_t i = 0; i < old_count; i++) {
        Fd old(bpf_prog_get_fd_by_id(old_ids[i]));
        if (!old || bpf_prog_detach2(old.get(), cgroup.get(), BPF_CGROUP_DEVICE) < 0)
            log_warning_errno(errno, "Failed to detach an old device program from %s",
                              cgroup_dir.c_str());
    }
    return {};
}

} // namespace lodge::runtime
