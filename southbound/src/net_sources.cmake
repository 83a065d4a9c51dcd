# Ck transport: CkChannel over plain TCP or TLS (TLS contexts and identities: base/net). Asio,
# Beast and OpenSSL stay in these TUs.
add_library(qkdn_southbound_net STATIC
  ${CMAKE_CURRENT_LIST_DIR}/ck_channel.cpp
  ${CMAKE_CURRENT_LIST_DIR}/framed_server.cpp
)
target_include_directories(qkdn_southbound_net PUBLIC ${CMAKE_CURRENT_LIST_DIR}/../include)
target_link_libraries(qkdn_southbound_net
  PUBLIC qkdn_southbound qkdn_net OpenSSL::SSL Boost::headers Threads::Threads
  PRIVATE qkdn_options)
