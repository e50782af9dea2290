// Secret sources (broker/secret_broker.h), the sealed bundle that carries values out of the
// broker, and the launcher's secret files (vmm-agent/cell/secret_files.h), each on the real kernel.

#include "broker/secret_broker.h"
#include "ipc/vmm.capnp.h"
#include "vmm-agent/cell/secret_files.h"

#include <capnp/serialize.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/fsuid.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

namespace cellos {
namespace {

class TempDir {
 public:
  TempDir() {
    char dir[] = "/tmp/cellos-secrets-XXXXXX";
    EXPECT_NE(mkdtemp(dir), nullptr);
    path_ = dir;
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }
  void write(const std::string& name, const std::string& content) const {
    std::ofstream(path_ + "/" + name, std::ios::binary) << content;
  }

 private:
  std::string path_;
};

std::string valueOf(const broker::ResolvedSecret& secret) {
  return std::string(secret.value.view());
}

TEST(SecretBroker, EnvSourceReadsCellosSecretVariables) {
  setenv("CELLOS_SECRET_db.password", "hunter2-value", 1);
  broker::SecretBroker source("env", "");
  auto resolved = source.resolve({"db.password"});
  unsetenv("CELLOS_SECRET_db.password");
  ASSERT_EQ(resolved.size(), 1u);
  EXPECT_EQ(resolved[0].name, "db.password");
  EXPECT_EQ(valueOf(resolved[0]), "hunter2-value");
}

TEST(SecretBroker, EnvSourceAlsoTakesTheReferenceBrokersSpelling) {
  setenv("CELLOS_SECRET_GITHUB_TOKEN_RO", "reference-spelling", 1);
  broker::SecretBroker source("env", "");
  auto resolved = source.resolve({"github-token.ro"});
  unsetenv("CELLOS_SECRET_GITHUB_TOKEN_RO");
  EXPECT_EQ(valueOf(resolved[0]), "reference-spelling");
}

TEST(SecretBroker, AMissingSecretIsNamedButNoValueIsShown) {
  setenv("CELLOS_SECRET_PRESENT", "present-value", 1);
  broker::SecretBroker source("env", "");
  try {
    source.resolve({"PRESENT", "ABSENT"});
    FAIL() << "resolved a secret that does not exist";
  } catch (const std::runtime_error& e) {
    std::string what = e.what();
    EXPECT_NE(what.find("ABSENT"), std::string::npos) << what;
    EXPECT_EQ(what.find("present-value"), std::string::npos) << what;
  }
  unsetenv("CELLOS_SECRET_PRESENT");
}

TEST(SecretBroker, DirSourceServesRegularFilesOnly) {
  TempDir dir;
  dir.write("TOKEN", "token-value\n");  // as `echo token-value > TOKEN` writes it
  dir.write("TWO", "line1\nline2\n\n");
  dir.write("BIG", std::string(broker::kMaxSecretBytes + 1, 'x'));
  dir.write("outside", "not a secret");
  ASSERT_EQ(symlink((dir.path() + "/outside").c_str(), (dir.path() + "/LINK").c_str()), 0);
  ASSERT_EQ(mkfifo((dir.path() + "/PIPE").c_str(), 0600), 0);  // must not block start-up
  broker::SecretBroker source("dir", dir.path());
  EXPECT_EQ(valueOf(source.resolve({"TOKEN"})[0]), "token-value");
  EXPECT_EQ(valueOf(source.resolve({"TWO"})[0]), "line1\nline2\n");
  for (const char* name : {"LINK", "PIPE", "NOPE"}) {
    EXPECT_THROW(source.resolve({name}), std::runtime_error) << name;
  }
  try {
    source.resolve({"BIG"});
    FAIL() << "a value over the limit was served";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("longer than 65536 bytes"), std::string::npos);
  }
  // Read per run: a changed file is seen by the next run without a restart.
  dir.write("TOKEN", "rotated");
  EXPECT_EQ(valueOf(source.resolve({"TOKEN"})[0]), "rotated");
}

TEST(SecretBroker, BadConfigurationStopsStartUpWithOneLine) {
  EXPECT_THROW(broker::SecretBroker("vault", ""), std::runtime_error);
  EXPECT_THROW(broker::SecretBroker("dir", ""), std::runtime_error);
  EXPECT_THROW(broker::SecretBroker("dir", "/nonexistent/secrets"), std::runtime_error);
  unsetenv("CREDENTIALS_DIRECTORY");
  EXPECT_THROW(broker::SecretBroker("systemd-credentials", ""), std::runtime_error);
  TempDir dir;
  dir.write("signing", "credential-value");
  setenv("CREDENTIALS_DIRECTORY", dir.path().c_str(), 1);
  broker::SecretBroker source("systemd-credentials", "");
  unsetenv("CREDENTIALS_DIRECTORY");
  EXPECT_EQ(valueOf(source.resolve({"signing"})[0]), "credential-value");
}

TEST(SecretBundle, IsASealedMemfdHoldingTheValues) {
  std::vector<broker::ResolvedSecret> secrets;
  secrets.push_back({"A", core::SecretBuffer("alpha", 5)});
  secrets.push_back({"B", core::SecretBuffer("b\0eta", 5)});
  kj::AutoCloseFd fd = broker::sealBundle(secrets, "file");
  int seals = fcntl(fd.get(), F_GET_SEALS);
  EXPECT_EQ(seals & (F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL),
            F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
  EXPECT_LT(pwrite(fd.get(), "x", 1, 0), 0);  // nobody can change it now
  EXPECT_EQ(errno, EPERM);
  // The receiver reads from offset 0 (pread); the shared offset is where the writes ended.
  EXPECT_GT(lseek(fd.get(), 0, SEEK_CUR), 0);
  ASSERT_EQ(lseek(fd.get(), 0, SEEK_SET), 0);
  capnp::StreamFdMessageReader reader(fd.get());
  auto bundle = reader.getRoot<ipc::SecretBundle>();
  EXPECT_EQ(std::string(bundle.getDelivery().cStr()), "file");
  ASSERT_EQ(bundle.getSecrets().size(), 2u);
  auto value = bundle.getSecrets()[1].getValue();
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(value.begin()), value.size()),
            std::string("b\0eta", 5));
}

class SecretFiles : public ::testing::Test {
 protected:
  static constexpr uid_t kOwner = 1879048192 + 4242;  // an unprivileged id no one uses
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root: creates files as another id";
    ASSERT_EQ(chown(dir_.path().c_str(), kOwner, kOwner), 0);
    ASSERT_EQ(chmod(dir_.path().c_str(), 0700), 0);
    fd_ = open(dir_.path().c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    ASSERT_GE(fd_, 0);
  }
  void TearDown() override {
    if (fd_ >= 0) close(fd_);
  }
  TempDir dir_;
  int fd_ = -1;
};

TEST_F(SecretFiles, EachSecretIsAFileOfTheWorkloadMode0400) {
  auto names =
      vmm::writeSecretFiles(fd_, {{"API_TOKEN", "v1"}, {"db.password", "v2"}}, kOwner, false);
  EXPECT_EQ(names, (std::vector<std::string>{"API_TOKEN", "db.password"}));
  struct stat st {};
  ASSERT_EQ(stat((dir_.path() + "/API_TOKEN").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, kOwner);
  EXPECT_EQ(st.st_gid, kOwner);
  EXPECT_EQ(st.st_mode & 07777, 0400u);
  std::ifstream in(dir_.path() + "/db.password");
  std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(content, "v2");
  EXPECT_EQ(geteuid(), 0u);  // and the launcher is itself again
  EXPECT_EQ(setfsuid(static_cast<uid_t>(-1)), 0);
}

TEST_F(SecretFiles, BadNamesDuplicatesAndNulInEnvAreRefused) {
  for (const char* name : {"../escape", "a/b", ".", "..", "", "x=y"}) {
    EXPECT_THROW(vmm::writeSecretFiles(fd_, {{name, "v"}}, kOwner, false), std::runtime_error)
        << name;
  }
  EXPECT_FALSE(std::filesystem::exists(dir_.path() + "/../escape"));
  EXPECT_THROW(vmm::writeSecretFiles(fd_, {{"A", "v"}, {"A", "w"}}, kOwner, false),
               std::runtime_error);
  EXPECT_THROW(vmm::writeSecretFiles(fd_, {{"N", std::string_view("a\0b", 3)}}, kOwner, true),
               std::runtime_error);
  // A planted symlink is not followed.
  ASSERT_EQ(symlink("/tmp/cellos-secret-target", (dir_.path() + "/L").c_str()), 0);
  EXPECT_THROW(vmm::writeSecretFiles(fd_, {{"L", "v"}}, kOwner, false), std::runtime_error);
  EXPECT_FALSE(std::filesystem::exists("/tmp/cellos-secret-target"));
}

}  // namespace
}  // namespace cellos
