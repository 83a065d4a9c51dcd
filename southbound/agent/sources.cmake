# southbound/agent: the qkdn-agent (lightweight KMs with emulated QKD links). Included from
# southbound/CMakeLists.txt, so paths are relative to southbound/.
add_library(qkdn_agent STATIC
  agent/key_store.cpp
  agent/secure_memory.cpp
  agent/log.cpp
  agent/kma_wire.cpp
  agent/kma_messages.cpp
  agent/options.cpp
  agent/km_host.cpp
  agent/key_supply.cpp
  agent/agent.cpp
  agent/admin_http.cpp
  agent/sae_key_id.cpp
  agent/sae_supply.cpp
  agent/etsi_request.cpp
  agent/etsi_server.cpp
  agent/kxi_codec.cpp
  agent/kxi.cpp
  agent/kxi_host.cpp
)
target_include_directories(qkdn_agent PUBLIC agent/include PRIVATE agent)
target_link_libraries(qkdn_agent
  PUBLIC qkdn_base qkdn_southbound qkdn_core Boost::headers
  PRIVATE qkdn_southbound_net qkdn_net qkdn_json Boost::json OpenSSL::SSL OpenSSL::Crypto Threads::Threads
          qkdn_options)

add_executable(qkdn-agent agent/main.cpp)
target_link_libraries(qkdn-agent PRIVATE qkdn_agent qkdn_net Threads::Threads qkdn_options)
