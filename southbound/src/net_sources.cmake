# Ck transport: CkChannel over plain TCP or TLS. Asio, Beast and OpenSSL stay in these TUs.
add_library(qkdn_southbound_net STATIC
  src/ck_channel.cpp
  src/tls.cpp
)
target_include_directories(qkdn_southbound_net PUBLIC include)
target_link_libraries(qkdn_southbound_net
  PUBLIC qkdn_southbound OpenSSL::SSL Boost::headers Threads::Threads
  PRIVATE qkdn_options)
