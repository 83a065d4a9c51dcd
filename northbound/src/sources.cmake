# qkdn_northbound: HTTP server (Beast), REST API, metrics.
add_library(qkdn_northbound STATIC
  src/http_server.cpp
)
target_include_directories(qkdn_northbound PUBLIC include)
target_link_libraries(qkdn_northbound PUBLIC qkdn_core Boost::headers OpenSSL::SSL Threads::Threads
                      PRIVATE qkdn_options)
