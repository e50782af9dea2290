#pragma once
// The EventSigner RPC interface: the broker asks for signatures, any local member of group
// cellos may read the public keyset. Only the broker's uid may call sign().

#include "event-signer/event_chain.h"
#include "event-signer/key_store.h"
#include "ipc/signer.capnp.h"

namespace cellos::signer {

class SignerServer final : public ipc::EventSigner::Server {
 public:
  // `maySign` and `mayRotate` are decided per connection from the peer's credentials.
  SignerServer(KeyStore& keys, EventChain& chain, bool maySign, bool mayRotate)
      : keys_(keys), chain_(chain), maySign_(maySign), mayRotate_(mayRotate) {}

  kj::Promise<void> sign(SignContext context) override;
  kj::Promise<void> keyset(KeysetContext context) override;
  kj::Promise<void> head(HeadContext context) override;
  kj::Promise<void> rotate(RotateContext context) override;
  kj::Promise<void> written(WrittenContext context) override;

  static constexpr size_t kMaxBatch = 4096;
  static constexpr size_t kMaxEventBytes = 256 * 1024;

 private:
  KeyStore& keys_;
  EventChain& chain_;
  bool maySign_;
  bool mayRotate_;
};

}  // namespace cellos::signer
