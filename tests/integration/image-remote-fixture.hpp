// The fixture of the remote image tests (test-image-remote*.cpp): a local HTTPS image server
// (tests/fixtures/simplestreams.py on 127.0.0.1, a CA made here with openssl) serving the
// busybox test rootfs as simplestreams images (unified, split, and one to tamper with), a
// private bus and lodged, and a remote added for the server.
#pragma once

#include "common/fd.hpp"
#include "common/fileio.hpp"
#include "harness.hpp"
#include "lodged-harness.hpp"

#include <csignal>
#include <fcntl.h>
#include <set>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

namespace lodge::test {

class ImageRemote : public ::testing::Test {
protected:
    void SetUp() override {
        LODGE_REQUIRE_ROOT();
        if (sh("command -v openssl python3 >/dev/null && echo yes") != "yes\n")
            GTEST_SKIP() << "needs openssl and python3";
        dir = TestRoot::get().dir + "/" + unique_name("ss");
        root = dir + "/www";
        int st = 0;
        sh("mkdir -p " + root + " " + dir + "/img && bash " + env_path("LODGE_FIXTURES") +
               "/make-busybox-rootfs.sh " + dir + "/img/rootfs",
           &st);
        ASSERT_EQ(st, 0);
        arch = sh("dpkg --print-architecture | tr -d '\\n'");
        std::string img = dir + "/img";
        sh("cd " + img +
               " && printf 'architecture: x86_64\\ncreation_date: 1700000000\\nproperties:\\n  "
               "os: BusyBox\\n  description: remote test image\\n' > metadata.yaml"
               " && tar -czf unified.tar.gz metadata.yaml rootfs && tar -cJf meta.tar.xz "
               "metadata.yaml && tar -C rootfs -cJf root.tar.xz .",
           &st);
        ASSERT_EQ(st, 0);
        std::string py = "python3 " + env_path("LODGE_FIXTURES") + "/simplestreams.py add " + root;
        sh(py + " bb-unified bbu,busybox " + arch + " --unified " + img + "/unified.tar.gz && " +
               py + " bb-split bbs " + arch + " --meta " + img + "/meta.tar.xz --rootxz " + img +
               "/root.tar.xz && " + py + " bb-bad bad " + arch + " --meta " + img +
               "/meta.tar.xz --rootxz " + img + "/root.tar.xz",
           &st);
        ASSERT_EQ(st, 0);
        // A test CA, a server certificate for 127.0.0.1 signed by it, and another CA.
        sh("cd " + dir +
               " && openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 "
               "-subj /CN=lodge-test-ca 2>/dev/null"
               " && openssl req -x509 -newkey rsa:2048 -nodes -keyout other.key -out other.crt "
               "-days 2 -subj /CN=lodge-other-ca 2>/dev/null"
               " && openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr "
               "-subj /CN=127.0.0.1 2>/dev/null"
               " && printf 'subjectAltName=IP:127.0.0.1\\n' > san.ext"
               " && openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial "
               "-out server.crt -days 2 -extfile san.ext 2>/dev/null",
           &st);
        ASSERT_EQ(st, 0);
        start_server();
        setenv("LODGE_DOWNLOAD_STALL_TIMEOUT", "3", 1);
        bus = std::make_unique<PrivateBus>();
        daemon = std::make_unique<Lodged>();
        ASSERT_TRUE(daemon->wait_ready());
        remote = unique_name("test");
        std::string out = ctl("remote add " + remote + " " + url + " --ca " + dir + "/ca.crt", &st);
        ASSERT_EQ(st, 0) << out;
    }
    void TearDown() override {
        for (auto& n : created)
            ctl("delete --force " + n);
        for (auto& fp : fingerprints())
            ctl("image delete " + fp);
        daemon.reset();
        bus.reset();
        unsetenv("LODGE_DOWNLOAD_STALL_TIMEOUT");
        if (server > 0) {
            kill(server, SIGKILL);
            waitpid(server, nullptr, 0);
        }
        if (!dir.empty())
            sh("rm -rf " + dir + " " + TestRoot::get().dir + "/state/remotes.json " +
               TestRoot::get().dir + "/state/image-refresh.json");
    }
    void start_server() {
        int p[2];
        ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
        server = fork();
        if (server == 0) {
            dup2(p[1], 1);
            execlp("python3", "python3", (env_path("LODGE_FIXTURES") + "/simplestreams.py").c_str(),
                   "serve", root.c_str(), (dir + "/server.crt").c_str(),
                   (dir + "/server.key").c_str(), (dir + "/requests.log").c_str(), nullptr);
            _exit(127);
        }
        close(p[1]);
        // The server prints its port once it listens.
        std::string port;
        char c;
        while (read(p[0], &c, 1) == 1 && c != '\n')
            port += c;
        close(p[0]);
        ASSERT_FALSE(port.empty()) << "the test image server did not start";
        url = "https://127.0.0.1:" + port;
    }
    std::string make(const std::string& base) {
        std::string n = unique_name(base);
        created.push_back(n);
        return n;
    }
    // How often the server was asked for `path_part`.
    std::string requests(const std::string& path_part) {
        return sh("grep -c '" + path_part + "' " + dir + "/requests.log || true");
    }
    void control(const std::string& json) {
        ASSERT_EQ(write_file_atomic(root + "/control.json", json), 0);
    }
    static std::string store() { return TestRoot::get().dir + "/state/images"; }
    static std::string hidden() { return sh("ls -A " + store() + " | grep '^\\.' || true"); }
    static std::vector<std::string> fingerprints() {
        std::vector<std::string> out;
        auto j = nlohmann::json::parse(ctl("image list --json"), nullptr, false);
        if (j.is_array())
            for (auto& i : j)
                out.push_back(i["fingerprint"]);
        return out;
    }
    // Nothing of a failed download: no image, no work dir, no container.
    void expect_nothing_left(const std::string& container) {
        EXPECT_TRUE(fingerprints().empty()) << ctl("image list");
        EXPECT_TRUE(wait_until([] { return hidden().empty(); })) << hidden();
        EXPECT_FALSE(contains(ctl("list -q"), container));
        EXPECT_FALSE(exists(TestRoot::get().dir + "/state/containers/" + container));
    }
    // `launch REF CONTAINER` fails saying `why` and leaves nothing behind; its output.
    std::string expect_launch_fails(const std::string& ref, const std::string& container,
                                    const std::string& why) {
        int st = 0;
        std::string out = ctl("launch " + ref + " " + container, &st);
        EXPECT_NE(st, 0) << out;
        EXPECT_TRUE(contains(out, why)) << out;
        expect_nothing_left(container);
        return out;
    }

    std::unique_ptr<PrivateBus> bus;
    std::unique_ptr<Lodged> daemon;
    std::vector<std::string> created;
    std::string dir, root, url, remote, arch;
    pid_t server = -1;
};

} // namespace lodge::test
