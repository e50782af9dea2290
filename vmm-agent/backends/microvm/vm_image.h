#pragma once
// A microVM cell's disks and boot files, on the launcher's side: the read-only ext4 root image
// a guest boots from (built from the host view or a registered directory image, cached by
// content), and the boot manifest that pins the kernel and initramfs by digest.
//
// What goes into a root image is what an unprivileged host user could read, because in the
// guest the workload is root: a linux cell's workload (root in its user namespace only, an
// unprivileged host id outside) sees the same read-only tree through the host's permission
// checks; a guest's root would read any file of the image. So a file mode 0600 on the host
// (/etc/shadow, /etc/ssh/ssh_host_*_key) never enters an image, and setuid/setgid bits and
// extended attributes (file capabilities) are dropped: nothing in the guest is privileged.
//
// Errors: std::system_error for a failed system call (naming it), std::runtime_error for a
// digest mismatch, a malformed manifest or a failed mke2fs, std::invalid_argument for a bad
// source.

#include "vmm-agent/cell/sys_util.h"

#include <sys/stat.h>
#include <sys/types.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace cellos::vmm {

// --- Root images ---------------------------------------------------------------------------

// Part of every cache key: bump it when what the builder stages or how it calls mke2fs changes,
// so images of an older builder are not reused.
inline constexpr int kRootImageFormatVersion = 1;

// The default host view a VM cell gets: the parts of the host's /usr a workload uses and /etc
// (the whole /usr is several GB). Each entry is a glob(3) pattern; one that matches nothing is
// left out (hosts differ in layout), so the image manifest's sourcePaths says what was taken.
std::vector<std::string> defaultHostViewPaths();

// Where a root comes from.
struct RootImageSource {
  // Empty: the host view (hostViewPaths under /usr and /etc, plus the usr-merge links /bin,
  // /sbin, /lib, /lib64 -> usr/...). Else the absolute path of a registered directory image
  // whose top-level entries (imageEntries(): all but kImageSkippedEntries) are the root.
  std::string imageRoot;
  // The host view's paths: absolute glob patterns, each under /usr or /etc.
  std::vector<std::string> hostViewPaths = defaultHostViewPaths();
  // Absolute directories the guest mounts over (the cell's working directory, say), created
  // empty in the image besides the fixed ones (kRootImageMountPoints).
  std::vector<std::string> mountPoints;
};

// Directories every image has so the guest init can mount over them (an entry of the source
// with one of these names that is not a directory is replaced by an empty directory, so a mount
// never follows a symlink out of place). /etc/resolv.conf is always a regular file too (empty
// when the source has none, or has a symlink there) for the guest to bind its own over.
inline constexpr const char* kRootImageMountPoints[] = {
    "/proc", "/dev", "/sys", "/tmp", "/run", "/workspace", "/run/secrets"};

// One entry of a staged tree, as the cache key sees it (the canonical listing).
struct StagedEntry {
  std::string path;  // relative to the image root, no leading '/': "usr/bin/python3"
  char type = 0;     // 'd' directory, 'f' regular file, 'l' symlink
  mode_t mode = 0;   // permission bits after masking: mode & (0777 | S_ISVTX)
  uid_t uid = 0;
  gid_t gid = 0;
  uint64_t size = 0;    // regular files; 0 otherwise
  int64_t mtimeNs = 0;  // of the source entry; 0 for entries the builder adds
  std::string target;   // symlinks: the target, verbatim
};

// What a source stages to, before any image exists: the listing (sorted by path), the bytes
// the regular files take, the host paths taken and the cache key.
struct RootImagePlan {
  std::vector<StagedEntry> entries;
  uint64_t stagedBytes = 0;  // regular files' sizes rounded up to 4 KiB, plus 4 KiB a directory
  std::vector<std::string> sourcePaths;  // host view: the matched paths; image: its root
  std::string key;                       // hex SHA-256 of the listing and the format version
};

// Walks `source` (lstat and readlink only, nothing is written) and returns what the image of
// it would hold. Unreadable parts are left out, as described above.
RootImagePlan planRootImage(const RootImageSource& source);

// Builds the staged tree of `source` under `stagingDir` (an existing empty directory, on the
// same filesystem as the source for hard links to work): directories made with the source's
// owner and mode, regular files hard-linked (copied when link(2) fails with EXDEV, EPERM or
// EMLINK, or when the mode must change), symlinks made anew. Returns the listing of what it
// staged; its key differs from planRootImage's only if the source changed in between. Setting
// another owner needs root: a non-root caller can stage only a tree of its own files.
RootImagePlan stageRootImage(const RootImageSource& source, const std::string& stagingDir);

// A built (or reused) image.
struct RootImage {
  std::string path;    // <cacheDir>/root-<key>.ext4, mode 0444
  std::string sha256;  // hex, of the image file, as its manifest records it
  uint64_t sizeBytes = 0;
  std::string key;
  bool built = false;        // built by this call; false: an image of the same key was reused
  uint64_t buildMillis = 0;  // 0 when reused
};

// The root image of `source` in `cacheDir`: reused when <cacheDir>/root-<key>.ext4 and its
// manifest root-<key>.json ({key, sha256, size, sourcePaths, builtAt}) exist, else staged
// under cacheDir and made by mke2fs (ext4, no journal, root 0:0, label "cellos-root", no
// xattrs), hashed, made 0444 and renamed into place. Builders of one cacheDir take turns
// (flock on <cacheDir>/.lock), and each leaves at most `keepImages` images: the least recently
// used others (by manifest mtime, which a reuse refreshes) are removed, with leftovers of a
// builder that died. cacheDir is created 0700 if missing; an existing one must belong to the
// caller and be writable by no one else (the images in it are trusted).
RootImage buildRootImage(const RootImageSource& source, const std::string& cacheDir,
                         size_t keepImages = 4);

// --- Boot artifacts ------------------------------------------------------------------------

// A file and the digest it must have (hex SHA-256, lower case).
struct ExpectedFile {
  std::string path;
  std::string sha256;
};

// What a guest boots: the kernel and initramfs come from <dir>/boot-manifest.json, the root
// image's digest from its own manifest (RootImage::sha256).
struct BootManifest {
  ExpectedFile kernel;     // a bzImage (vmlinuz)
  ExpectedFile initramfs;  // the guest init's cpio archive
  ExpectedFile rootImage;
};

// <dir>/boot-manifest.json = {"kernel": {"path", "sha256"}, "initramfs": {"path", "sha256"}},
// written atomically (temporary file, fsync, rename), mode 0644. rootImage is not written.
void writeBootManifest(const std::string& dir, const BootManifest& manifest);
// The inverse; rootImage is left empty. Strict: absolute paths, 64 lower-case hex digits, no
// other members. Throws std::runtime_error naming the file otherwise.
BootManifest readBootManifest(const std::string& dir);

// Hex SHA-256 of what `fd` reads from offset 0 to its end (pread: the offset is untouched).
std::string sha256OfFd(int fd, const std::string& name);

struct BootArtifacts;

// Digests of files verified earlier in this process, keyed by the file's identity: (st_dev,
// st_ino, st_size, st_mtim, st_ctim). A file whose identity matches an earlier successful
// verification is not hashed again (hashing a 1.6 GB root image takes seconds, per boot);
// anything else is.
//
// The trade-off: a write to the file changes its mtime and ctime, and ctime cannot be set back
// from user space (utimensat sets it to now), so a file whose identity is unchanged has the
// content that was hashed — unless someone rewrote the blocks below the filesystem (the raw
// device) or changed the clock and the file at once. Both need root, and the files are
// root's (0444 in a 0700 directory): root is trusted here. The cache does not protect against
// root; it does catch every ordinary rewrite, replacement (a new inode) or truncation.
class VerifiedFileCache {
 public:
  // The digest recorded for `st`'s identity, if any.
  std::optional<std::string> lookup(const struct stat& st) const;
  // Records `sha256` for `st`'s identity (replacing what the same inode had).
  void remember(const struct stat& st, const std::string& sha256);
  // How many files verifyBootArtifacts has hashed through this cache (for tests and logs).
  uint64_t hashes() const;

  // The cache kept in a file across processes of one boot of the host (each `cellos run` starts
  // a launcher; hashing a root image costs seconds): `bootId` (/proc/sys/kernel/random/boot_id)
  // heads the file, and a file of another boot, or one that does not parse, is ignored (device
  // numbers need not survive a reboot). The file lives in the launcher's own image cache
  // (0700, root's): whoever could write it could also write the images.
  void load(const std::string& path, const std::string& bootId);
  // Writes it atomically (temporary file, rename), mode 0600.
  void save(const std::string& path, const std::string& bootId) const;

 private:
  friend BootArtifacts verifyBootArtifacts(const BootManifest& manifest, VerifiedFileCache& cache);
  void countHash();

  struct Identity {
    off_t size;
    timespec mtime;
    timespec ctime;
    std::string sha256;
  };
  mutable std::mutex mutex_;
  std::map<std::pair<dev_t, ino_t>, Identity> files_;
  uint64_t hashes_ = 0;
};

// One verified file, open O_RDONLY|O_CLOEXEC: hand the fd to the VMM, not the path, so what
// boots is what was hashed.
struct VerifiedFile {
  std::string path;
  Fd fd;
  std::string sha256;  // hex
  uint64_t sizeBytes = 0;
  bool hashed = false;  // false: the cache vouched for it
};

struct BootArtifacts {
  VerifiedFile kernel;
  VerifiedFile initramfs;
  VerifiedFile rootImage;
};

// Opens, fstats and (unless `cache` knows the identity) hashes each of the three files, and
// compares with the manifest's digest. A mismatch throws std::runtime_error naming the file and
// both digests; a file that changed while it was hashed (fstat before and after differ) throws
// too. Only matching digests are remembered.
BootArtifacts verifyBootArtifacts(const BootManifest& manifest, VerifiedFileCache& cache);

}  // namespace cellos::vmm
